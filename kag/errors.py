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


class ModelVerificationError(ModelLoadError):
    """A model file (or one of the packages it is joined from) is not the one kag pinned."""

    code = "model_verification_failed"


class ModelInstallError(ModelLoadError):
    """`kag models install` could not fetch a model's packages."""

    code = "model_install_failed"


class StoreError(KagError):
    """A ledger or index operation failed."""

    code = "store_error"


class DataDirLockedError(StoreError):
    code = "data_dir_locked"


class AuditWriteError(StoreError):
    """The audit record of an answer could not be written; the answer must not be returned."""

    code = "audit_write_failed"


class GenerationError(KagError):
    """The model could not produce the requested output (bad grammar, unparsable JSON, prompt too long)."""

    code = "generation_error"


class ReplayError(KagError):
    """A recorded answer cannot be replayed (altered record, no model output, unknown parameters)."""

    code = "replay_error"


class ExecutorError(KagError):
    """The distributed executor (Ray) could not be reached or failed beyond its retries."""

    code = "executor_error"


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


class OcrUnavailableError(DocumentError):
    """A page needs OCR (KAG_OCR=auto) and the OCR engine cannot run here."""

    code = "ocr_unavailable"


# --- the service's request errors (kag/api maps each code to one HTTP status) --------------


class InvalidRequestError(KagError):
    """The request is well-formed but asks for something impossible (bad filter, bad field)."""

    code = "invalid_request"


class AuthenticationError(KagError):
    """No API key, or one that is unknown or revoked."""

    code = "unauthenticated"


class PermissionDeniedError(KagError):
    """The API key is valid but its role or collection scope does not allow this."""

    code = "forbidden"


class ConflictError(KagError):
    """The request conflicts with the current state (e.g. a running ingestion job)."""

    code = "conflict"


class PayloadTooLargeError(KagError):
    """A request body or upload is over its configured limit."""

    code = "payload_too_large"


class RetryableError(KagError):
    """Try again later; `retry_after` says when (seconds)."""

    code = "retryable"

    def __init__(self, message: str, *, retry_after: float, hint: str | None = None, **context: object) -> None:
        super().__init__(message, hint=hint, **context)
        self.retry_after = max(1, int(retry_after + 0.999))


class RateLimitedError(RetryableError):
    code = "rate_limited"


class OverloadedError(RetryableError):
    """A bounded queue (generation, ingestion) is full; the request was refused before any work."""

    code = "overloaded"


class AnswerInterruptedError(RetryableError):
    """An answer was stopped before it finished (the service is shutting down); its audit record says so."""

    code = "answer_interrupted"


class RequestTimeoutError(KagError):
    code = "request_timeout"


class EvaluationError(KagError):
    """An evaluation dataset, setup or option is unusable (`kag eval`)."""

    code = "evaluation_error"
