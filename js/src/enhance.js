// The submission form's optional script, part 1 of 2: small, loaded with the page.
//
// Without JavaScript the form posts its files as multipart, and everything works. With it,
// sending a form that has files loads upload.js (tus-js-client: resumable uploads) at that
// moment, and hands it the files; a message alone is posted as usual. The start page thus
// weighs the same for everyone, and only a source who sends files fetches the uploader.

const BUNDLE = "/static/upload.js";
const LOAD_ATTEMPTS = 3;

function loadBundle(attempt = 1) {
  return new Promise((resolve, reject) => {
    if (window.AmanahUpload) {
      resolve(window.AmanahUpload);
      return;
    }
    const script = document.createElement("script");
    script.src = BUNDLE;
    script.onload = () => resolve(window.AmanahUpload);
    script.onerror = () => {
      script.remove();
      if (attempt < LOAD_ATTEMPTS) {
        setTimeout(() => loadBundle(attempt + 1).then(resolve, reject), 2000 * attempt);
      } else {
        reject(new Error("the upload script did not load"));
      }
    };
    document.head.append(script);
  });
}

function say(form, name) {
  const box = form.querySelector("#progress");
  box.hidden = false;
  box.querySelector("p").textContent = form.dataset[name] || "";
}

function reset(form) {
  for (const field of form.querySelectorAll("input[name=upload]")) {
    field.remove();
  }
  for (const element of form.querySelectorAll("input[type=file], button")) {
    element.disabled = false;
  }
}

function enhance(form) {
  const input = form.querySelector("input[type=file][name=files]");
  const supported = window.XMLHttpRequest && window.Blob && window.Promise && window.URL;
  if (!input || !form.querySelector("#progress") || !supported) {
    return;
  }
  form.addEventListener("submit", (event) => {
    const files = Array.from(input.files || []).filter((file) => file.size > 0);
    if (files.length === 0) {
      return; // a message alone: the plain form is all it needs
    }
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    if (button.disabled) {
      return; // already sending
    }
    button.disabled = true;
    say(form, "preparing");
    loadBundle().then(
      (bundle) => bundle.send(form, input, files),
      () => {
        say(form, "failed");
        button.disabled = false;
      },
    );
  });
  // Back to this page from the receipt (the page cache): the form must work again.
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) {
      reset(form);
    }
  });
}

const form = document.getElementById("send");
if (form) {
  enhance(form);
}
