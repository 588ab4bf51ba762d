"""The one exception tree of kag: every error says where it happened and what to do next."""

from __future__ import annotations


class KagError(Exception):
    """Base class of every error kag raises on purpose."""

    #: a short machine-readable code, used by the CLI's --json output and the HTTP error envelope
    code = "kag_error"

    def __init__(self, message: str, *, hint: str | None = None, **context: object) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.context = {k: v for k, v in context.items() if v is not None}

    def __str__(self) -> str:
        text = self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class ConfigurationError(KagError):
    code = "configuration_error"


class MissingDependencyError(KagError):
    code = "missing_dependency"


class ModelLoadError(KagError):
    code = "model_load_error"


class StoreError(KagError):
    """A ledger or index operation failed."""

    code = "store_error"


class DataDirLockedError(StoreError):
    code = "data_dir_locked"


class NotFoundError(KagError):
    code = "not_found"


class DocumentError(KagError):
    """A single input document cannot be ingested; the batch goes on."""

    code = "document_error"


class UnsupportedFormatError(DocumentError):
    code = "unsupported_format"


class CorruptDocumentError(DocumentError):
    code = "corrupt_document"


class EncryptedDocumentError(DocumentError):
    code = "encrypted_document"


class EmptyDocumentError(DocumentError):
    code = "empty_document"


class DecodeError(DocumentError):
    code = "undecodable"


class FileTooLargeError(DocumentError):
    code = "file_too_large"


class UnreadablePathError(DocumentError):
    code = "unreadable_path"
