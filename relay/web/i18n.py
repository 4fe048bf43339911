"""Languages of the source pages: one gettext catalogue, English and Arabic today, any other
language one file away.

    relay/web/locale/messages.pot   every string a source can be shown: the templates' text
                                    and the messages of the errors that reach a source page
                                    (written by `python -m relay.web.i18n`, never by hand)
    relay/web/locale/<code>.po      one language's translations; adding a language is
                                    adding this file (copy the .pot, translate every entry)

Rules:
- English is the source language: a msgid is the English text, so English needs no file;
- the .po files are the only source of translations: they are compiled in memory when the
  relay starts (Babel), so no compiled .mo can drift from the reviewed text, and there is
  no build step to forget;
- errors keep their English messages in code (operators, logs and tus clients read
  them); a source page translates a message as it renders (`Language.message`). A message
  with a variable part is a msgid with `{name}` placeholders, matched against the English
  text, and what a placeholder matched is itself translated (`{list}`: each `; `-separated
  part); a message missing from the catalogue is shown in English, never dropped;
- the language comes from `?lang=` (then kept in a session cookie that dies with the
  browser), else from Accept-Language, else English; nothing about it is logged or kept.
"""

from __future__ import annotations

import argparse
import ast
import gettext
import io
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

HERE = Path(__file__).parent
LOCALE = HERE / "locale"
TEMPLATE = LOCALE / "messages.pot"
SOURCE_LANGUAGE = "en"
COOKIE = "amanah_lang"
DOMAIN = "amanah"
MAX_ACCEPT_LANGUAGE = 1024  # a real browser sends under 100 characters; bounds the parse
MAX_DEPTH = 3  # nested placeholders (a list of refusals) go two levels deep
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
LIST_CONTEXT = "list separator"
HEADER = """\
# The source pages of Amanah, in every language: the template of the catalogue.
# Written by `python -m relay.web.i18n`; translate in <code>.po, never here.
#"""

# Errors whose messages can reach a source page, and the modules that raise them there.
# The catalogue test extracts again and compares: a new message in one of these modules
# without a translation fails it.
ERROR_NAMES = frozenset(
    {
        "RelayError",
        "ClientError",
        "LimitExceeded",
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "Conflict",
        "CodenameError",
    }
)
REPO = HERE.parent.parent
SOURCE_MODULES = (
    "relay/web/source.py",
    "relay/web/common.py",
    "relay/ingest.py",
    "relay/sanitize/errors.py",
    "crypto/codename.py",
)
# Messages made elsewhere than in an error's constructor.
LANGUAGE_CONTEXT = "language"
SOURCE_NAME = "English"
DIRECTIONS = frozenset({"ltr", "rtl"})
_CODE = re.compile(r"[a-z]{2,3}(_[A-Z]{2})?")

EXTRA: tuple[tuple[str | None, str, str], ...] = (
    (None, "file {position}: {message}", "relay.ingest.Refusal.for_source"),
    (None, "the relay could not complete this request", "relay.web.common: any 500"),
    (LIST_CONTEXT, "; ", "between the parts of a {list}"),
    # aiohttp's reasons, shown by the error page for a wrong path, method or size.
    (None, "Not Found", "aiohttp: an unknown page"),
    (None, "Method Not Allowed", "aiohttp: a page asked for the wrong way"),
    (None, "Request Entity Too Large", "aiohttp: a form over the size limit"),
    (None, "Bad Request", "aiohttp: a request that does not parse"),
    # Each catalogue names its own language and direction (the convention of GTK's
    # "default:LTR"): one file is a whole language, and no CLDR data (5.9 MiB of RAM,
    # measured, in every relay process) is loaded to learn two words.
    (LANGUAGE_CONTEXT, SOURCE_NAME, "this language's name, written in this language"),
    (LANGUAGE_CONTEXT, "ltr", "this language's direction: ltr, or rtl if written right to left"),
)


# --- the languages, at run time ---------------------------------------------------------------


@dataclass(frozen=True)
class Pattern:
    """A msgid with placeholders, as a regular expression over the English text."""

    regex: re.Pattern[str]
    msgid: str


@dataclass(frozen=True, eq=False)
class Language:
    code: str
    translations: gettext.NullTranslations
    patterns: tuple[Pattern, ...] = ()

    @property
    def name(self) -> str:
        """The language's name in itself, for the switch ("العربية"), from its catalogue."""
        return self.translations.pgettext(LANGUAGE_CONTEXT, SOURCE_NAME)

    @property
    def direction(self) -> str:
        return self.translations.pgettext(LANGUAGE_CONTEXT, "ltr")

    def gettext(self, text: str) -> str:
        return self.translations.gettext(text)

    def message(self, text: str) -> str:
        """The English `text` of an error, in this language (English if not catalogued)."""
        return self._translate(text, 0)[0]

    def _translate(self, text: str, depth: int) -> tuple[str, bool]:
        """(text in this language, whether every part of it was in the catalogue)."""
        translated = self.translations.gettext(text)
        if translated != text or self.code == SOURCE_LANGUAGE:
            return translated, True
        partial = None
        for pattern in self.patterns if depth < MAX_DEPTH else ():
            found = pattern.regex.fullmatch(text)
            if found is None:
                continue
            complete = True
            values = {}
            for name, value in found.groupdict().items():
                values[name], known = self._value(name, value, depth)
                complete = complete and known
            result = _fill(self.translations.gettext(pattern.msgid), values)
            if complete:
                return result, True
            partial = partial or result
        return partial or text, False

    def _value(self, name: str, value: str, depth: int) -> tuple[str, bool]:
        """A placeholder's match, translated: a number stays as it is; a `{list}` is parts
        joined by "; ", and a part may itself hold "; " (a refusal's advice), so each part
        is the shortest run of pieces that translates whole."""
        if value.isdigit():
            return value, True
        if name != "list":
            return self._translate(value, depth + 1)
        pieces = value.split("; ")
        parts: list[str] = []
        complete = True
        start = 0
        while start < len(pieces):
            for end in range(start + 1, len(pieces) + 1):
                part, known = self._translate("; ".join(pieces[start:end]), depth + 1)
                if known:
                    break
            else:  # no run translates whole: this piece alone, as far as it goes
                end = start + 1
                part = self._translate(pieces[start], depth + 1)[0]
                complete = False
            parts.append(part)
            start = end
        separator = self.translations.pgettext(LIST_CONTEXT, "; ")
        return separator.join(parts), complete


def _fill(template: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def compile_po(path: Path, code: str) -> tuple[gettext.NullTranslations, Catalog]:
    """A .po file as translations in memory. Fuzzy and empty entries are left out (English
    shows instead), as gettext's own compiler does."""
    with path.open("rb") as source:
        catalog = read_po(source, locale=code, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled), catalog


def patterns_of(msgids: list[str]) -> tuple[Pattern, ...]:
    """Patterns for the msgids with `{name}` placeholders, longest literal text first so a
    specific message wins over a general one."""
    found = []
    for msgid in msgids:
        pieces = _PLACEHOLDER.split(msgid)
        if len(pieces) == 1:
            continue
        regex = "".join(
            re.escape(piece) if index % 2 == 0 else f"(?P<{piece}>.+?)"
            for index, piece in enumerate(pieces)
        )
        literal = sum(len(p) for p in pieces[::2])
        found.append((literal, Pattern(re.compile(regex, re.S), msgid)))
    return tuple(p for _, p in sorted(found, key=lambda f: -f[0]))


def _preferences(header: str) -> list[str]:
    """Primary language subtags of an Accept-Language header, most wanted first."""
    ranked = []
    for index, item in enumerate(header[:MAX_ACCEPT_LANGUAGE].split(",")):
        tag, _, parameters = item.strip().partition(";")
        weight = 1.0
        for parameter in parameters.split(";"):
            key, _, value = parameter.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        primary = tag.strip().lower().split("-")[0]
        if weight > 0 and primary.isalpha():
            ranked.append((-weight, index, primary))
    return [primary for _, _, primary in sorted(ranked)]


@dataclass
class Pages:
    """The languages, and the source pages' templates in each (one Jinja environment per
    language: the gettext functions a template calls are the environment's)."""

    languages: dict[str, Language]
    _environments: dict[str, jinja2.Environment] = field(default_factory=dict)

    @classmethod
    def load(cls, locale: Path = LOCALE) -> Pages:
        """English, and every `<code>.po` in `locale`. Raises ValueError for a file whose
        name is not a language code, or that does not give its language's name and a
        direction."""
        languages = {SOURCE_LANGUAGE: Language(SOURCE_LANGUAGE, gettext.NullTranslations())}
        for path in sorted(locale.glob("*.po")):
            code = path.stem
            translations, catalog = compile_po(path, code)
            msgids = [str(m.id) for m in catalog if m.id and isinstance(m.id, str)]
            language = Language(code, translations, patterns_of(msgids))
            if not _CODE.fullmatch(code):
                raise ValueError(f"{path.name}: not a language code (ar, fa, pt_BR, ...)")
            if language.direction not in DIRECTIONS or language.name == SOURCE_NAME:
                raise ValueError(
                    f"{path.name}: translate the language's name and direction "
                    f'(msgctxt "{LANGUAGE_CONTEXT}")'
                )
            languages[code] = language
        return cls(languages)

    def choose(self, asked: str | None, cookie: str | None, accept: str | None) -> Language:
        """`?lang=`, else the cookie, else Accept-Language, else English."""
        for code in (asked, cookie, *_preferences(accept or "")):
            if code in self.languages:
                return self.languages[code]
        return self.languages[SOURCE_LANGUAGE]

    def environment(self, language: Language) -> jinja2.Environment:
        if language.code not in self._environments:
            environment = jinja2.Environment(
                loader=jinja2.PackageLoader("relay.web", "templates"),
                autoescape=True,
                undefined=jinja2.StrictUndefined,
                extensions=["jinja2.ext.i18n"],
            )
            environment.policies["ext.i18n.trimmed"] = True  # msgids without layout spaces
            environment.install_gettext_translations(language.translations, newstyle=True)  # type: ignore[attr-defined]
            environment.filters["message"] = language.message
            self._environments[language.code] = environment
        return self._environments[language.code]

    def render(self, name: str, language: Language, **values: object) -> str:
        others = [each for code, each in self.languages.items() if code != language.code]
        return (
            self.environment(language)
            .get_template(name)
            .render(language=language, other_languages=others, **values)
        )


# --- extraction: what the catalogue must hold ----------------------------------------------------


def _placeholder(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return "value"


def _shape(node: ast.expr) -> str | None:
    """A message argument as a msgid: literal text, f-string parts as `{name}`, and
    `"literal" + anything` as `literal{list}`. None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            elif isinstance(value, ast.FormattedValue):
                parts.append("{" + _placeholder(value.value) + "}")
        return "".join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left = _shape(node.left)
        return None if left is None else left + "{list}"
    return None


def error_messages(path: Path) -> Iterator[tuple[int, str]]:
    """(line, msgid) of every error constructed with a message in a module, and of the
    values of a module-level `MESSAGES` dict."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ERROR_NAMES
            and node.args
            and (shape := _shape(node.args[0])) is not None
        ):
            yield node.lineno, shape
        elif (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "MESSAGES" for t in node.targets)
            and isinstance(node.value, ast.Dict)
        ):
            for value in node.value.values:
                if (shape := _shape(value)) is not None:
                    yield value.lineno, shape


def extract() -> Catalog:
    """The catalogue template: the templates' strings, then the errors' messages."""
    catalog = Catalog(
        domain=DOMAIN,
        header_comment=HEADER,
        project="Amanah",
        version="1",
        copyright_holder="the Amanah authors",
        msgid_bugs_address="",
        fuzzy=False,
    )
    options = {"**.html": {"extensions": "jinja2.ext.i18n", "trimmed": "true"}}
    for filename, _line, msgid, comments, context in extract_from_dir(
        HERE / "templates",
        method_map=[("**.html", "jinja2")],
        options_map=options,
        keywords={"_": None, "gettext": None, "pgettext": ((1, "c"), 2)},
    ):
        where = f"relay/web/templates/{filename}"
        catalog.add(msgid, locations=[(where, 0)], auto_comments=comments, context=context)
    for module in SOURCE_MODULES:
        for _line, msgid in error_messages(REPO / module):
            catalog.add(msgid, locations=[(module, 0)], auto_comments=["an error message"])
    for context, msgid, comment in EXTRA:
        catalog.add(msgid, context=context, auto_comments=[comment])
    return catalog


def catalogue_bytes(catalog: Catalog) -> bytes:
    out = io.BytesIO()
    write_po(out, catalog, width=96, sort_output=False, include_lineno=False)
    return out.getvalue()


def _write_if_changed(path: Path, content: bytes) -> None:
    """Writes unless only the creation date differs (no churn in the history)."""

    def body(data: bytes) -> list[bytes]:
        return [line for line in data.splitlines() if b"-Creation-Date:" not in line]

    if not path.exists() or body(path.read_bytes()) != body(content):
        path.write_bytes(content)


def update(locale: Path = LOCALE) -> list[str]:
    """Writes messages.pot afresh and merges it into every .po: new msgids arrive empty,
    gone ones are dropped. Returns, per language, how many entries still need a translation."""
    template = extract()
    _write_if_changed(locale / TEMPLATE.name, catalogue_bytes(template))
    report = []
    for path in sorted(locale.glob("*.po")):
        with path.open("rb") as source:
            catalog = read_po(source, locale=path.stem, domain=DOMAIN)
        catalog.update(template, no_fuzzy_matching=True, update_header_comment=False)
        catalog.obsolete.clear()
        _write_if_changed(path, catalogue_bytes(catalog))
        missing = untranslated(catalog)
        report.append(f"{path.name}: {len(missing)} to translate")
    return report


def untranslated(catalog: Catalog) -> list[str]:
    return [str(m.id) for m in catalog if m.id and (not m.string or m.fuzzy)]


def placeholders(text: str) -> set[str]:
    return set(_PLACEHOLDER.findall(text)) | set(re.findall(r"%\((\w+)\)s", text))


def main(argv: list[str] | None = None, out: Callable[[str], object] = print) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m relay.web.i18n",
        description="Extracts every string of the source pages (templates and the error "
        "messages a source can see) into relay/web/locale/messages.pot, and merges it into "
        "each relay/web/locale/<code>.po. New strings arrive untranslated; translate them, "
        "then run the catalogue test (tests/relay/test_i18n.py).",
        epilog="example: a new language, French:\n"
        "  cp relay/web/locale/messages.pot relay/web/locale/fr.po\n"
        '  (set "Language: fr" in its header, translate every msgstr)\n'
        "  .venv/bin/python -m relay.web.i18n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    for line in update():
        out(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
