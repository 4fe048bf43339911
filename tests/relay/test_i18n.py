"""The source pages in every language: the catalogue is complete and up to date, each page
renders in each language with nothing left in English, error messages are translated as
they render (variable parts included), and a real relay picks the language from `?lang=`,
its session cookie and Accept-Language."""

from __future__ import annotations

import html
import os
import re
import shutil
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import aiohttp
import pytest
from babel.messages.pofile import read_po, write_po
from hypothesis import given
from hypothesis import strategies as st

from relay.web import i18n
from relay.web.i18n import LOCALE, TEMPLATE, Pages
from tests.relayharness import (
    RelayPool,
    RelayProcess,
    Upload,
    add_contact,
    codename_of,
    error_of,
    form,
    fresh_csrf,
    init_data,
    keygen,
    login,
    source_session,
    submit,
)
from tests.sanitize import samples

PAGES = Pages.load()
ARABIC = PAGES.languages["ar"]
TEMPLATES = sorted(p.name for p in (LOCALE.parent / "templates").glob("*.html"))
UNSUPPORTED = (
    "this kind of file cannot be cleaned of hidden data here, so it was not sent; send photos "
    "(JPEG, PNG, WebP, HEIC, AVIF, TIFF, GIF), audio (MP3, M4A, FLAC, Ogg, Opus, WAV) or video "
    "(MP4, MOV, 3GP, MKV, WebM, AVI)"
)
DAMAGED = (
    "this file seems damaged or is not the kind of file it looks like, so it was not sent; try "
    "exporting it again from the app that made it"
)


def catalogue(path: Path, code: str | None = None) -> dict[tuple[str, str | None], str]:
    with path.open("rb") as f:
        loaded = read_po(f, locale=code)
    assert not [m.id for m in loaded if m.fuzzy and m.id], f"fuzzy entries in {path.name}"
    return {(str(m.id), m.context): str(m.string) for m in loaded if m.id}


# --- the catalogue ----------------------------------------------------------------------------


def test_catalogue_template_is_up_to_date() -> None:
    """Every string of the templates and every error message a source can see is in
    messages.pot, and nothing else (`python -m relay.web.i18n` rewrites it)."""
    extracted = {(str(m.id), m.context) for m in i18n.extract() if m.id}
    assert extracted == set(catalogue(TEMPLATE)), "run: .venv/bin/python -m relay.web.i18n"


@pytest.mark.parametrize("po", sorted(LOCALE.glob("*.po")), ids=lambda p: p.stem)
def test_every_language_translates_every_string(po: Path) -> None:
    template = catalogue(TEMPLATE)
    translated = catalogue(po, po.stem)
    assert set(translated) == set(template), f"{po.name} is not merged with messages.pot"
    for (msgid, _), msgstr in translated.items():
        assert msgstr.strip(), f"{po.name}: not translated: {msgid!r}"
        assert msgstr != msgid or msgid == "; ", f"{po.name}: left in English: {msgid!r}"
        assert i18n.placeholders(msgstr) == i18n.placeholders(msgid), msgid
        assert re.findall(r"<[^>]+>", msgstr) == re.findall(r"<[^>]+>", msgid), msgid


def test_adding_a_language_is_one_file(tmp_path: Path) -> None:
    """A French file with one string translated: the switch offers it, the page says that
    string in French, and the rest falls back to English rather than vanishing."""
    for po in LOCALE.glob("*.po"):
        shutil.copy(po, tmp_path / po.name)
    with TEMPLATE.open("rb") as f:
        french = read_po(f, locale="fr")
    french["Send"].string = "Envoyer"
    # Without its own name and direction the file is refused at start-up, plainly.
    with (tmp_path / "fr.po").open("wb") as f:
        write_po(f, french)
    with pytest.raises(ValueError, match=r"fr\.po: translate the language's name"):
        Pages.load(tmp_path)
    for msgid, translation in (("English", "français"), ("ltr", "ltr")):
        entry = french.get(msgid, context="language")
        assert entry is not None
        entry.string = translation
    with (tmp_path / "fr.po").open("wb") as f:
        write_po(f, french)
    pages = Pages.load(tmp_path)
    assert set(pages.languages) == {"en", "ar", "fr"}
    page = render(pages, "index.html", "fr")
    assert '<html lang="fr" dir="ltr">' in page
    assert "Envoyer" in page and "Who should receive this?" in page
    assert 'hreflang="fr"' in render(pages, "index.html", "ar")
    assert "français" in render(pages, "index.html", "en")


def test_a_catalogue_not_named_for_a_language_is_refused(tmp_path: Path) -> None:
    """The file's name is the language's code (`?lang=`, the cookie, <html lang>)."""
    shutil.copy(LOCALE / "ar.po", tmp_path / "arabic.po")
    with pytest.raises(ValueError, match=r"arabic\.po: not a language code"):
        Pages.load(tmp_path)


# --- messages with variable parts ----------------------------------------------------------


@pytest.mark.parametrize(
    ("english", "arabic"),
    [
        ("the message is too long", "الرسالة طويلة جدًا"),
        (
            "at most 20 files can be sent at once",
            "الحد الأقصى لعدد الملفات في الإرسال الواحد هو 20",
        ),
        (
            "word 3 is not in the codename word list",
            "الكلمة رقم 3 ليست من قائمة كلمات الأسماء الرمزية",
        ),
        (
            "a codename has at least 7 words; got 2",
            "الحد الأدنى لعدد كلمات الاسم الرمزي هو 7، وقد أدخلت 2",
        ),
        (f"file 2: {DAMAGED}", "الملف رقم 2: " + ARABIC.gettext(DAMAGED)),
        (  # a list whose parts hold "; " themselves
            f"nothing could be sent: file 1: {DAMAGED}; file 3: {UNSUPPORTED}",
            "تعذّر إرسال أي شيء: الملف رقم 1: "
            + ARABIC.gettext(DAMAGED)
            + "؛ الملف رقم 3: "
            + ARABIC.gettext(UNSUPPORTED),
        ),
    ],
)
def test_error_messages_translate_as_they_render(english: str, arabic: str) -> None:
    assert ARABIC.message(english) == arabic
    assert PAGES.languages["en"].message(english) == english


def test_an_uncatalogued_message_is_shown_in_english() -> None:
    assert ARABIC.message("failed to write: disk full") == "failed to write: disk full"
    # A list with an unknown part: the known parts are translated, the unknown one kept.
    mixed = ARABIC.message(f"nothing could be sent: file 1: odd; file 2: {DAMAGED}")
    assert mixed.startswith("تعذّر إرسال أي شيء: الملف رقم 1: odd؛ الملف رقم 2: ")


@given(st.text(max_size=300))
def test_any_message_translates_without_error(text: str) -> None:
    assert isinstance(ARABIC.message(text), str)
    assert PAGES.languages["en"].message(text) == text


# --- choosing the language -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "cookie", "accept", "chosen"),
    [
        (None, None, None, "en"),
        (None, None, "ar", "ar"),
        (None, None, "ar-EG,ar;q=0.9,en;q=0.8", "ar"),
        (None, None, "en-US,en;q=0.5", "en"),  # what Tor Browser sends by default
        (None, None, "fr-FR, ar;q=0.4, en;q=0.3", "ar"),
        (None, None, "en;q=0.2, AR;q=0.9", "ar"),
        (None, None, "ar;q=0, en", "en"),  # q=0 means "not this one"
        (None, None, "ar;q=abc", "en"),
        (None, None, "*", "en"),
        (None, "ar", "en", "ar"),
        ("en", "ar", "ar", "en"),
        ("ar", None, "en", "ar"),
        ("xx", "<script>", ";;;,,,q=", "en"),
        (None, None, "ar" + ",x" * 5000, "ar"),
    ],
)
def test_language_choice(
    asked: str | None, cookie: str | None, accept: str | None, chosen: str
) -> None:
    assert PAGES.choose(asked, cookie, accept).code == chosen


@given(st.text(max_size=2000), st.text(max_size=20), st.text(max_size=20))
def test_any_header_chooses_a_language(accept: str, asked: str, cookie: str) -> None:
    assert PAGES.choose(asked, cookie, accept).code in PAGES.languages


# --- every page in every language --------------------------------------------------------------


class _Text(HTMLParser):
    """The visible text of a page, leaving out elements marked lang="en" (the codename, the
    switch's own link to English) and what is inside <title>."""

    VOID = frozenset({"meta", "link", "input", "br", "img", "hr"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[bool] = []
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            english = dict(attrs).get("lang") == "en" or tag in ("title", "style", "script")
            self.stack.append(english or bool(self.stack and self.stack[-1]))

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.VOID and self.stack:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if not (self.stack and self.stack[-1]):
            self.parts.append(data)


# Words that are the same in every language: names of software, formats, and the samples.
KEPT = re.compile(
    r"\b(Tor|JavaScript|Safest|JPEG|PNG|WebP|HEIC|AVIF|TIFF|GIF|MP3|M4A|FLAC|Ogg|Opus|WAV|"
    r"MP4|MOV|3GP|MKV|WebM|AVI|alpha-news|un-inquiry)\b"
)
SAMPLES: dict[str, object] = {
    "csrf": "token",
    "logged_in": True,
    "contacts": [
        {"name": "alpha-news", "description": ""},
        {"name": "un-inquiry", "description": "الأمم المتحدة"},
    ],
    "switch_path": "/",
    "switch_new_tab": False,
    "message": "the message is too long",
    "error": "word 2 is not in the codename word list",
    "codename": "abacus abdomen abdominal abide abiding ability ablaze",
    "contacts_sent": ["alpha-news", "un-inquiry"],
    "refused": [f"file 2: {DAMAGED}"],
    "sealed_on": "relay",
    "replies": [
        {"contact": "alpha-news", "created_at": 0, "text": "شكرًا لك"},
        {"contact": "un-inquiry", "created_at": 0, "text": None},
    ],
}


def render(pages: Pages, template: str, code: str, **values: object) -> str:
    return pages.render(template, pages.languages[code], **{**SAMPLES, **values})


@pytest.mark.parametrize("template", [t for t in TEMPLATES if t != "form.html"])
def test_every_page_renders_in_arabic_with_nothing_left_in_english(template: str) -> None:
    variants: list[dict[str, object]] = [
        {},
        {"codename": None, "refused": [], "replies": [], "logged_in": False},
    ]
    for values in variants:
        page = render(PAGES, template, "ar", **values)
        assert '<html lang="ar" dir="rtl">' in page
        parser = _Text()
        parser.feed(page)
        text = KEPT.sub("", html.unescape(" ".join(parser.parts)))
        left = re.findall(r"[A-Za-z]{2,}", text)
        assert not left, f"{template} has English left in Arabic: {left}"


@pytest.mark.parametrize("template", [t for t in TEMPLATES if t != "form.html"])
def test_every_page_renders_in_english(template: str) -> None:
    page = render(PAGES, template, "en")
    assert '<html lang="en" dir="ltr">' in page
    assert 'href="/?lang=ar" lang="ar" hreflang="ar" dir="rtl">العربية</a>' in page
    assert "{" not in page.replace("{percent}", "")  # no placeholder left unfilled


# --- a real relay -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    root = tmp_path_factory.mktemp("i18n")
    data = root / "data"
    init_data(data)
    add_contact(data, "alpha-news", [keygen(root / "alice.txt")])
    with RelayPool(root) as pool:
        yield pool.new(data)


async def get(
    session: aiohttp.ClientSession, url: str, **headers: str
) -> tuple[int, str, aiohttp.ClientResponse]:
    async with session.get(url, headers=headers) as response:
        return response.status, await response.text(), response


async def test_accept_language_chooses_the_page_language(relay: RelayProcess) -> None:
    async with source_session() as session:
        _, page, _ = await get(session, relay.source_url + "/", **{"Accept-Language": "ar"})
        assert '<html lang="ar" dir="rtl">' in page
        assert "أرسل شهادتك" in page and 'href="/?lang=en"' in page
        _, page, _ = await get(session, relay.source_url + "/login", **{"Accept-Language": "en"})
        assert '<html lang="en" dir="ltr">' in page
        assert 'href="/login?lang=ar"' in page  # the switch reloads this very page
        assert 'target="_blank"' not in page


async def test_the_switch_is_kept_in_a_session_cookie(relay: RelayProcess) -> None:
    async with source_session() as session:
        english = {"Accept-Language": "en-US,en;q=0.5"}
        _, page, response = await get(session, relay.source_url + "/?lang=ar", **english)
        assert '<html lang="ar" dir="rtl">' in page
        cookie = response.cookies[i18n.COOKIE]
        assert cookie.value == "ar"
        assert not cookie["expires"] and not cookie["max-age"]  # dies with the browser
        assert cookie["httponly"] and cookie["samesite"] == "Strict"
        _, page, _ = await get(session, relay.source_url + "/login", **english)
        assert '<html lang="ar" dir="rtl">' in page  # the cookie, not Accept-Language
        _, page, _ = await get(session, relay.source_url + "/?lang=en", **english)
        assert '<html lang="en" dir="ltr">' in page


async def test_an_unknown_language_is_english_and_not_reflected(relay: RelayProcess) -> None:
    async with source_session() as session:
        _, page, response = await get(session, relay.source_url + "/?lang=%3Cscript%3E")
        assert '<html lang="en" dir="ltr">' in page
        assert "<script>" not in page and i18n.COOKIE not in response.cookies


async def test_error_pages_are_translated(relay: RelayProcess) -> None:
    arabic = {"Accept-Language": "ar"}
    async with source_session() as session:
        status, page, _ = await get(session, relay.source_url + "/nowhere", **arabic)
        assert status == 404 and error_of(page) == "الصفحة غير موجودة"
        status, page = await submit(
            session, relay.source_url, form("forged", "hello"), headers=arabic
        )
        assert status == 403
        assert error_of(page) == "انتهت صلاحية هذا النموذج؛ أعد تحميل الصفحة وأرسله مرة أخرى"
        await get(session, relay.source_url + "/?lang=ar")
        status, page = await login(session, relay.source_url, "abacus zzzz")
        assert status == 400
        assert error_of(page) == "الكلمة رقم 2 ليست من قائمة كلمات الأسماء الرمزية"


async def test_receipt_in_arabic_with_a_refused_file(relay: RelayProcess, tmp_path: Path) -> None:
    photo = samples.jpeg(tmp_path).read_bytes()
    files = [Upload("photo.jpg", photo), Upload("noise.bin", os.urandom(4096))]
    async with source_session() as session:
        await get(session, relay.source_url + "/?lang=ar")
        csrf = await fresh_csrf(session, relay.source_url)
        status, page = await submit(session, relay.source_url, form(csrf, "hello", [], files))
    assert status == 200, page
    assert '<html lang="ar" dir="rtl">' in page
    assert "تم استلام ما أرسلته وتشفيره على الموقع فور وصوله" in page
    assert "<li>الملف رقم 2: " + html.escape(ARABIC.gettext(UNSUPPORTED)) + "</li>" in page
    assert '<div dir="ltr" lang="en"><p class="words">' in page
    assert len(codename_of(page).split()) >= 7


async def test_receipt_in_english_says_sealed_on_the_relay(relay: RelayProcess) -> None:
    async with source_session() as session:
        csrf = await fresh_csrf(session, relay.source_url)
        status, page = await submit(session, relay.source_url, form(csrf, "hello"))
    assert status == 200, page
    assert "Your drop was received and sealed on the relay on arrival, for:" in page
    assert "sealed on your device" not in page
    # A page that answers a form cannot be asked for again: the switch opens the start
    # page in a new tab, and leaves the receipt (and its codename) where it is.
    switch = 'href="/?lang=ar" lang="ar" hreflang="ar" dir="rtl" target="_blank" rel="noopener"'
    assert switch in page


async def test_nothing_sendable_is_refused_in_arabic(relay: RelayProcess) -> None:
    files = [Upload("a.bin", os.urandom(2048)), Upload("b.bin", os.urandom(2048))]
    async with source_session() as session:
        await get(session, relay.source_url + "/?lang=ar")
        csrf = await fresh_csrf(session, relay.source_url)
        status, page = await submit(session, relay.source_url, form(csrf, None, [], files))
    assert status == 400
    refusal = ARABIC.gettext(UNSUPPORTED)
    assert error_of(page) == f"تعذّر إرسال أي شيء: الملف رقم 1: {refusal}؛ الملف رقم 2: {refusal}"
