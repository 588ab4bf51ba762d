"""EML loader: an email's headers as metadata, its body as text, each attachment as its own section.

Attachments are parsed by the loader the registry holds for their file name (else their MIME type)
and appended to the email's text under an `Attachment: NAME` heading, their own headings one level
deeper: a citation into an attachment is then a span of the email's document, and deleting the
email deletes them too. An attachment that cannot be parsed fails alone: the email and its other
attachments are still ingested, and the failure is listed in `metadata["attachment_errors"]` (the
ingestion job reports each one as an error on `EMAIL#ATTACHMENT`). Attachments of a type no loader
reads (images, archives) are listed in `metadata["attachments_skipped"]` and are no error."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage, Message, MIMEPart
from email.parser import BytesParser
from typing import Any, Protocol

from ingest.loaders.base import Loader, LoaderLimits, TextAssembler, clean_title, normalize_newlines
from kag.errors import DocumentError, EmptyDocumentError, UnsupportedFormatError
from kag.records import ParsedDocument

#: headers kept in metadata and shown at the top of the text, in this order
HEADERS = ("subject", "from", "to", "cc", "date", "message-id")
_SHOWN = ("from", "to", "cc", "date")


class RegistryLike(Protocol):
    def for_path(self, path_or_name: str) -> Loader: ...

    def for_mime(self, mime: str) -> Loader: ...


class EmlLoader:
    """`.eml` (RFC 5322, parsed by the stdlib `email` package)."""

    mime_type = "message/rfc822"

    def __init__(self, registry: RegistryLike, *, limits: LoaderLimits | None = None) -> None:
        self.registry = registry
        self.limits = limits or LoaderLimits()

    def load(self, data: bytes, *, source: str) -> ParsedDocument:
        message = BytesParser(policy=policy.default).parsebytes(data)
        assert isinstance(message, EmailMessage)  # policy.default builds EmailMessage objects
        headers = {name: " ".join(str(message[name]).split()) for name in HEADERS if message[name] is not None}
        out = TextAssembler(max_chars=self.limits.max_text_chars, source=source)
        subject = headers.get("subject")
        if subject:
            out.add(subject, heading_level=1)
        out.add("\n".join(f"{name.capitalize()}: {headers[name]}" for name in _SHOWN if name in headers))
        self._add_body(out, message, source)
        attachments: list[dict[str, Any]] = []
        skipped: list[dict[str, str]] = []
        errors: list[dict[str, str]] = []
        for index, part in enumerate(message.iter_attachments(), start=1):
            name = _filename(part, index)
            try:
                parsed = self._load_part(part, name, f"{source}#{name}")
            except UnsupportedFormatError:
                # logos, calendar invites, archives: not documents, and no reason to fail anything
                skipped.append({"attachment": name, "mime_type": part.get_content_type()})
                continue
            except DocumentError as exc:
                errors.append({"attachment": name, "code": exc.code, "message": str(exc)})
                continue
            out.add(f"Attachment: {name}", heading_level=1)
            start, end = out.add_document(parsed.text, parsed.headings, level_shift=1)
            attachments.append({"name": name, "mime_type": parsed.mime_type, "start": start, "end": end})
        if not out.text.strip():
            raise EmptyDocumentError(f"{source}: the message has no headers, body or attachment", source=source)
        metadata: dict[str, Any] = {"headers": headers, "attachments": attachments}
        if skipped:
            metadata["attachments_skipped"] = skipped
        if errors:
            metadata["attachment_errors"] = errors
        return ParsedDocument(
            text=out.text,
            mime_type=self.mime_type,
            title=clean_title(subject),
            headings=tuple(out.headings),
            metadata=metadata,
        )

    def _add_body(self, out: TextAssembler, message: EmailMessage, source: str) -> None:
        body = message.get_body(preferencelist=("plain", "html"))
        if body is None:
            return
        text = _part_text(body)
        if body.get_content_type() == "text/html":
            try:
                parsed = self.registry.for_mime("text/html").load(text.encode("utf-8"), source=source)
            except EmptyDocumentError:
                return
            out.add_document(parsed.text, parsed.headings, level_shift=1)
        else:
            out.add(normalize_newlines(text).replace("\x00", ""))

    def _load_part(self, part: Message, name: str, source: str) -> ParsedDocument:
        if part.get_content_type() == "message/rfc822":
            inner = part.get_payload(0)
            assert isinstance(inner, Message)
            return self.load(inner.as_bytes(policy=policy.default), source=source)
        try:
            loader = self.registry.for_path(name)
        except UnsupportedFormatError:
            try:
                loader = self.registry.for_mime(part.get_content_type())
            except UnsupportedFormatError as exc:
                raise UnsupportedFormatError(
                    f"{source}: no loader for the attachment {name} ({part.get_content_type()})",
                    hint=exc.hint,
                    source=source,
                ) from exc
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes) or not payload:
            raise EmptyDocumentError(f"{source}: the attachment is empty", source=source)
        return loader.load(payload, source=source)


def _filename(part: Message, index: int) -> str:
    name = part.get_filename()
    if name:
        # a name with a path in it names the file, not a place to write to
        return name.replace("\\", "/").rsplit("/", 1)[-1].strip() or f"attachment-{index}"
    if part.get_content_type() == "message/rfc822":
        return f"attachment-{index}.eml"
    return f"attachment-{index}"


def _part_text(part: MIMEPart) -> str:
    """A text part decoded by its charset; an unknown or wrong charset degrades to replacement characters."""
    try:
        content = part.get_content()
        if isinstance(content, str):
            return content
    except (LookupError, UnicodeError):
        pass
    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return raw.decode(charset, errors="replace")
    except LookupError:
        return raw.decode("utf-8", errors="replace")
