"""Built-in limit policies: file size, file types (with content check) and quota.

Refusals use the statuses clients understand: 413 for size, 415 for types,
507 for a full mailbox, each with a sentence naming the mailbox and the limit.
"""

from __future__ import annotations

import unicodedata

from pydantic import ByteSize, StrictBool, StrictInt, StrictStr, field_validator

from davbox.policies.base import AccessRequest, Decision, Operation, Policy, UploadLimit
from davbox.policies.content import content_matches
from davbox.policies.matching import MatchOptions

_STORE = frozenset({Operation.CREATE, Operation.OVERWRITE})


def human(size: int) -> str:
    """200000000 -> '200 MB' (decimal units, as people say them)."""
    text = ByteSize(size).human_readable(decimal=True, separator=" ")
    return text.replace(".0 ", " ")


def extension_of(name: str) -> str:
    """The last extension, lower-case, NFC, without the dot ("" if none): a.PDF.exe -> exe."""
    name = unicodedata.normalize("NFC", name)
    stem, dot, ext = name.rpartition(".")
    return ext.casefold() if dot and stem else ""


class SizeOptions(MatchOptions):
    max_file_size: ByteSize


class SizePolicy(Policy):
    """Refuse files larger than ``max_file_size`` (checked up front and while streaming)."""

    name = "size"
    Options = SizeOptions
    default_operations = _STORE

    def _reason(self, request: AccessRequest) -> str:
        limit = self.options.max_file_size  # type: ignore[union-attr]
        return f"files larger than {human(limit)} are not accepted in mailbox '{request.mailbox}'"

    def check(self, request: AccessRequest) -> Decision | None:
        limit = self.options.max_file_size  # type: ignore[union-attr]
        if request.size is not None and request.size > limit:
            size = human(request.size)
            if size == human(limit):  # 1000001 bytes is "1 MB" too: say what is over
                size = f"{request.size} bytes, the limit is {int(limit)}"
            return Decision.deny(f"{self._reason(request)} (this file has {size})", 413, self.label)
        return None

    def upload_limit(self, request: AccessRequest) -> UploadLimit:
        limit = int(self.options.max_file_size)  # type: ignore[union-attr]
        return UploadLimit(limit, 413, self._reason(request), self.label)


class ExtensionOptions(MatchOptions):
    allow: list[StrictStr] | None = None
    deny: list[StrictStr] | None = None
    verify_content: StrictBool = False

    @field_validator("allow", "deny")
    @classmethod
    def _normalise(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        return [v.strip().lstrip(".").casefold() for v in value]


class ExtensionPolicy(Policy):
    """Accept only allowed file types (last extension counts), optionally checking content."""

    name = "extensions"
    Options = ExtensionOptions
    default_operations = _STORE

    def check(self, request: AccessRequest) -> Decision | None:
        options: ExtensionOptions = self.options  # type: ignore[assignment]
        ext = extension_of(request.name)
        files = f"files of type .{ext}" if ext else "files without an extension"
        where = f"mailbox '{request.mailbox}'"
        if options.deny is not None and ext in options.deny:
            return Decision.deny(f"{files} are not accepted in {where}", 415, self.label)
        if options.allow is not None and ext not in options.allow:
            allowed = ", ".join(a for a in options.allow if a) or "none"
            return Decision.deny(
                f"{files} are not accepted in {where}; allowed: {allowed}",
                415,
                self.label,
            )
        if (
            options.verify_content
            and request.head is not None
            and not content_matches(ext, request.head)
        ):
            return Decision.deny(
                f"the content of '{request.name}' is not a .{ext} file; "
                f"files must have the extension of their type in {where}",
                415,
                self.label,
            )
        return None


class QuotaOptions(MatchOptions):
    max_bytes: ByteSize | None = None
    max_files: StrictInt | None = None


class QuotaPolicy(Policy):
    """Cap what a mailbox holds (bytes and file count); full means 507."""

    name = "quota"
    Options = QuotaOptions
    default_operations = frozenset({Operation.CREATE, Operation.OVERWRITE})

    def check(self, request: AccessRequest) -> Decision | None:
        options: QuotaOptions = self.options  # type: ignore[assignment]
        if request.usage is None:
            return None
        usage = request.usage()
        where = f"mailbox '{request.mailbox}' is full"
        if options.max_files is not None and usage.files + request.new_files > options.max_files:
            return Decision.deny(
                f"{where}: it may hold at most {options.max_files} files", 507, self.label
            )
        growth = request.growth
        limit = options.max_bytes
        if limit is not None and growth is not None and growth > 0 and usage.bytes + growth > limit:
            return Decision.deny(
                f"{where}: {human(usage.bytes)} of {human(limit)} used", 507, self.label
            )
        return None

    def upload_limit(self, request: AccessRequest) -> UploadLimit | None:
        options: QuotaOptions = self.options  # type: ignore[assignment]
        if options.max_bytes is None or request.usage is None:
            return None
        usage = request.usage()
        remaining = max(0, int(options.max_bytes) - usage.bytes + request.replaced)
        reason = (
            f"mailbox '{request.mailbox}' is full: {human(usage.bytes)} of"
            f" {human(options.max_bytes)} used"
        )
        return UploadLimit(remaining, 507, reason, self.label)

    def quota(self) -> int | None:
        options: QuotaOptions = self.options  # type: ignore[assignment]
        return int(options.max_bytes) if options.max_bytes is not None else None


class DenyOptions(MatchOptions):
    reason: StrictStr = "this is not allowed here"


class DenyPolicy(Policy):
    """Refuse the matching operations outright (e.g. a read-only archive folder)."""

    name = "deny"
    Options = DenyOptions
    default_operations = frozenset(Operation)

    def check(self, request: AccessRequest) -> Decision:
        return Decision.deny(self.options.reason, 403, self.label)  # type: ignore[union-attr]
