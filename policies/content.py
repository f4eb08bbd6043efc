"""Does a file's content match its extension? (``verify_content`` of the extensions policy)

Type detection is puremagic's (a maintained signature database); this module
only groups extensions into families that share a signature (all OOXML and
ODF documents are zip files; .doc, .xls and .ppt are OLE2 compound files).

Contract: ``content_matches(ext, head)`` gets the lower-case extension and
the first bytes of the file (4 KiB or more). It returns False when:
- the content is an executable (Windows PE, ELF, Mach-O), whatever the name;
- the extension belongs to a known family and the detected type does not;
- a text extension (txt, csv, ...) holds binary data (NUL bytes) or a file of
  a binary family above (a PDF or a ZIP named .txt); text formats that have a
  signature of their own (XML, JSON, e-mail) and chance matches ("BMI ..."
  reads like a bitmap header) are still text.
Unknown extensions with unrecognised content pass (nothing to compare with);
restrict types with an allow-list.
"""

from __future__ import annotations

import puremagic

_FAMILIES: list[frozenset[str]] = [
    frozenset({"pdf", "fdf"}),
    frozenset({"png"}),
    frozenset({"gif"}),
    frozenset({"jpg", "jpeg", "jpe", "jfif"}),
    frozenset({"eps", "epsf", "ps"}),
    frozenset(
        {
            "zip",
            "docx",
            "xlsx",
            "pptx",
            "ppsx",
            "odt",
            "ods",
            "odp",
            "xlsb",
            "xlsm",
            "docm",
            "pptm",
            "ott",
            "ots",
            "otp",
            "epub",
            "jar",
        }
    ),
    frozenset({"doc", "xls", "ppt", "pps", "msg", "dot", "xlt", "pot"}),
    frozenset({"rar", "cbr"}),
    frozenset({"7z", "cb7"}),
    frozenset({"gz", "tgz", "gzip"}),
    frozenset({"bz2", "bzip2", "tbz2", "tb2"}),
    frozenset({"cab"}),
    frozenset({"z", "tgz"}),
]
_TEXT = frozenset({"txt", "csv", "xml", "json", "md", "log"})
_NO_SIGNATURE = frozenset({"lzma"})  # raw LZMA streams carry no magic bytes
_EXECUTABLE = frozenset({"exe", "dll", "sys", "scr", "com", "drv", "ocx", "msi", "appimage"})
_EXECUTABLE_MIME = ("portable-executable", "x-executable", "x-mach-binary", "x-dosexec", "x-elf")
# ELF and Mach-O (32/64 bit, either byte order, universal): puremagic names Mach-O
# without a MIME type or extension, so the markers above miss it.
_EXECUTABLE_MAGIC = (
    b"\x7fELF",
    b"\xfe\xed\xfa\xce",
    b"\xce\xfa\xed\xfe",
    b"\xfe\xed\xfa\xcf",
    b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",
)
# Families whose content is never plain text (PostScript is).
_BINARY = frozenset().union(*(f for f in _FAMILIES if "ps" not in f))


def _detect(head: bytes) -> tuple[set[str], bool]:
    """(detected extensions without dots, is an executable)."""
    try:
        matches = puremagic.magic_string(head)
    except puremagic.PureError:
        return set(), False
    found = {m.extension.lower().lstrip(".").removeprefix("tar.") for m in matches}
    executable = bool(found & _EXECUTABLE) or any(
        any(marker in (m.mime_type or "") for marker in _EXECUTABLE_MIME)
        or "elf" in (m.name or "").lower().split()
        for m in matches
    )
    if head.startswith(_EXECUTABLE_MAGIC):
        executable = True
    return found - {""}, executable


def content_matches(ext: str, head: bytes) -> bool:
    if not head:
        return True  # an empty file claims nothing
    detected, executable = _detect(head)
    if executable:
        return False
    if ext in _TEXT:
        return b"\x00" not in head and not (detected & _BINARY)
    family = next((f for f in _FAMILIES if ext in f), None)
    if family is None:
        return True
    if not detected:
        return ext in _NO_SIGNATURE
    return bool(detected & family)
