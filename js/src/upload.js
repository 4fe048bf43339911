// The submission form's optional script, part 2 of 2 (part 1 is enhance.js, which loads
// this bundle only when a form with files is sent: the start page stays light).
//
// Without this script (Tor Browser at "Safest") the form posts its files as multipart, and
// everything works. With it, each chosen file goes to the relay's resumable upload endpoint
// (tus, /uploads) first: a dropped circuit is retried and carries on from the last byte the
// relay holds, and so does a reload of the page once the same file is chosen again. When
// every file is up, the form is posted as usual with one `upload` field per finished
// upload instead of the file parts; the relay then treats them exactly like files.
//
// Rules:
// - nothing leaves this origin: requests go to /uploads on the page's own relay;
// - the key tus-js-client keeps in localStorage (to resume after a reload) is a SHA-256 of
//   the file's size, date and first 64 KiB: never its name;
// - uploads are marked `held`: the relay keeps them for this browser session's form and
//   makes no drop of them by themselves;
// - every text shown comes from the page (data-* attributes, translated by the relay).

import { Upload } from "tus-js-client";

const ENDPOINT = "/uploads";
// Tor circuits drop every few minutes on bad networks: retry quickly at first, then every
// minute for about two hours. What arrived is kept by the relay for a day.
const RETRY_DELAYS = [0, 1000, 3000, 5000, 10000, 20000, 30000].concat(Array(120).fill(60000));
const SAMPLE = 64 * 1024;
const UPLOAD_ID = /\/uploads\/([0-9a-f]{32})$/;

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

// Identifies the same file chosen again after a reload, without its name.
async function fingerprint(file, options) {
  const header = new TextEncoder().encode(
    [options.endpoint, file.size, file.lastModified, file.type].join("\n") + "\n",
  );
  if (!(window.crypto && window.crypto.subtle)) {
    return null; // no digest here: no resuming across reloads (retries still work)
  }
  const sample = new Uint8Array(await file.slice(0, SAMPLE).arrayBuffer());
  const data = new Uint8Array(header.length + sample.length);
  data.set(header);
  data.set(sample, header.length);
  return "amanah-" + hex(await window.crypto.subtle.digest("SHA-256", data));
}

function retryable(error) {
  const status = error.originalResponse ? error.originalResponse.getStatus() : 0;
  // No answer (the circuit dropped), a busy upload (409: the relay has not yet noticed
  // the old connection is gone), or the relay's own trouble (5xx).
  return status === 0 || status === 409 || status === 423 || status >= 500;
}

class Progress {
  constructor(form, files) {
    this.form = form;
    this.box = form.querySelector("#progress");
    this.bar = this.box.querySelector("progress");
    this.text = this.box.querySelector("p");
    this.total = files.reduce((sum, file) => sum + file.size, 0);
    this.sent = files.map(() => 0);
    this.percent = new Intl.NumberFormat(document.documentElement.lang || undefined, {
      style: "percent",
    });
    this.box.hidden = false;
  }

  say(name, values = {}) {
    let text = this.form.dataset[name] || "";
    for (const [key, value] of Object.entries(values)) {
      text = text.replace("{" + key + "}", value);
    }
    this.text.textContent = text;
  }

  update(index, sent) {
    this.sent[index] = sent;
    const fraction = this.total ? this.sent.reduce((a, b) => a + b, 0) / this.total : 1;
    this.bar.value = Math.floor(fraction * 100);
    this.say("sending", { percent: this.percent.format(Math.floor(fraction * 100) / 100) });
  }
}

function uploadOne(file, index, progress) {
  return new Promise((resolve, reject) => {
    const upload = new Upload(file, {
      endpoint: ENDPOINT,
      metadata: { held: "1" },
      fingerprint,
      retryDelays: RETRY_DELAYS,
      removeFingerprintOnSuccess: true,
      onProgress: (sent) => progress.update(index, sent),
      onShouldRetry: (error) => {
        const again = retryable(error);
        if (again) {
          progress.say("reconnecting");
        }
        return again;
      },
      onError: reject,
      onSuccess: () => {
        const found = UPLOAD_ID.exec(new URL(upload.url, location.href).pathname);
        if (found) {
          resolve(found[1]);
        } else {
          reject(new Error("unexpected upload address"));
        }
      },
    });
    upload
      .findPreviousUploads()
      .then((previous) => {
        if (previous.length > 0) {
          upload.resumeFromPreviousUpload(previous[0]);
        }
        upload.start();
      })
      .catch(reject);
  });
}

async function send(form, input, files) {
  const button = form.querySelector("button[type=submit]");
  const progress = new Progress(form, files);
  progress.update(0, 0);
  const ids = [];
  try {
    // One file at a time: over one Tor circuit, parallel uploads only split the bandwidth.
    for (const [index, file] of files.entries()) {
      ids.push(await uploadOne(file, index, progress));
    }
  } catch {
    progress.say("failed");
    button.disabled = false;
    return;
  }
  progress.say("finishing");
  for (const id of ids) {
    const field = document.createElement("input");
    field.type = "hidden";
    field.name = "upload";
    field.value = id;
    form.append(field);
  }
  input.disabled = true; // a disabled input is not sent: the files went by tus
  form.submit();
}

// Called by enhance.js, which loads this bundle only when a form with files is sent.
export { send };
