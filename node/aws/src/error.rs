//! The crate's one error type: every failure names the AWS call (or metadata
//! path) it came from, and [`Error::is_retryable`] / [`Error::is_not_implemented`]
//! classify it for callers that loop (the node's publisher and lifecycle
//! watcher, the console's pollers).

use aws_sdk_autoscaling::config::http::HttpResponse;
use aws_sdk_autoscaling::error::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Error codes AWS uses for throttling: worth retrying after a pause.
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
    "SlowDown",
];

/// How an SDK call failed before or outside the service's own answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The request could not be built (bad input or configuration).
    Construction,
    /// No answer within the configured timeouts.
    Timeout,
    /// The request never reached the service (connection refused, DNS, TLS).
    Dispatch,
    /// An answer came but could not be read.
    Response,
    /// The service answered with an error.
    Service,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An AWS API call failed.
    #[error("{call}: {detail}")]
    Api {
        /// The API operation, e.g. `DescribeAutoScalingGroups`.
        call: &'static str,
        failure: Failure,
        /// HTTP status of the answer, when there was one.
        status: Option<u16>,
        /// AWS error code, when the answer carried one.
        code: Option<String>,
        detail: String,
    },
    /// The instance metadata service failed or is not there.
    #[error("instance metadata {path}: {detail}")]
    Imds {
        path: String,
        /// HTTP status of the answer, when there was one.
        status: Option<u16>,
        detail: String,
    },
    /// The call succeeded but the answer lacks what we asked for.
    #[error("{call}: {detail}")]
    Missing { call: &'static str, detail: String },
    /// Bad input from our caller (an endpoint URL, a group name).
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
}

impl Error {
    /// True when the same call may succeed if tried again later: timeouts,
    /// connection failures, throttling and server errors other than an
    /// emulator's "not implemented".
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Api {
                failure,
                status,
                code,
                ..
            } => match failure {
                Failure::Timeout | Failure::Dispatch | Failure::Response => true,
                Failure::Construction => false,
                Failure::Service => {
                    if self.is_not_implemented() {
                        return false;
                    }
                    code.as_deref()
                        .is_some_and(|c| THROTTLING_CODES.contains(&c))
                        || status.is_some_and(|s| s >= 500 || s == 429)
                }
            },
            Error::Imds { status, .. } => match status {
                None => true,
                Some(s) => *s >= 500 || *s == 429,
            },
            Error::Missing { .. } | Error::Invalid { .. } => false,
        }
    }

    /// True when the service answered HTTP 500 with no AWS error code, or said
    /// outright that the operation is not implemented. Real AWS always sends a
    /// code (`InternalFailure`) with its 500s; moto answers a bare 500 for the
    /// operations it lacks (`CompleteLifecycleAction`,
    /// `RecordLifecycleActionHeartbeat`), which no retry will fix.
    pub fn is_not_implemented(&self) -> bool {
        match self {
            Error::Api {
                failure: Failure::Service,
                status,
                code,
                detail,
                ..
            } => {
                let said_so = code
                    .as_deref()
                    .is_some_and(|c| c.contains("NotImplemented"))
                    || detail.contains("not implemented")
                    || detail.contains("not been implemented")
                    || detail.contains("not yet implemented");
                said_so || (*status == Some(500) && code.is_none())
            }
            _ => false,
        }
    }

    /// True when AWS said the named thing does not exist (validation errors
    /// naming a missing group or instance, or `*NotFound` codes).
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::Api { code, .. } => code.as_deref().is_some_and(|c| c.contains("NotFound")),
            Error::Missing { .. } => true,
            _ => false,
        }
    }

    /// The HTTP status of the failed answer, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } | Error::Imds { status, .. } => *status,
            _ => None,
        }
    }

    pub(crate) fn missing(call: &'static str, detail: impl Into<String>) -> Error {
        Error::Missing {
            call,
            detail: detail.into(),
        }
    }

    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> Error {
        Error::Invalid {
            what,
            detail: detail.into(),
        }
    }

    /// The one conversion from an SDK error (any of the three services: they
    /// share the runtime's error type) to ours.
    pub(crate) fn api<E>(call: &'static str, err: SdkError<E, HttpResponse>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let (failure, code, detail) = match &err {
            SdkError::ServiceError(ctx) => {
                let e = ctx.err();
                let code = e.code().map(str::to_owned);
                let message = e.message().unwrap_or("no message");
                let detail = match (&code, status) {
                    (Some(c), Some(s)) => format!("the AWS API answered {s} ({c}): {message}"),
                    (None, Some(s)) => format!("the AWS API answered {s}: {message}"),
                    (Some(c), None) => format!("the AWS API answered {c}: {message}"),
                    (None, None) => format!("the AWS API answered: {message}"),
                };
                (Failure::Service, code, detail)
            }
            SdkError::TimeoutError(_) => (
                Failure::Timeout,
                None,
                format!("no answer within {}s", crate::OPERATION_TIMEOUT.as_secs()),
            ),
            SdkError::DispatchFailure(_) => (
                Failure::Dispatch,
                None,
                format!("request not sent: {}", chain(&err)),
            ),
            SdkError::ResponseError(_) => (
                Failure::Response,
                None,
                format!("unreadable answer: {}", chain(&err)),
            ),
            _ => (
                Failure::Construction,
                None,
                format!("request not built: {}", chain(&err)),
            ),
        };
        Error::Api {
            call,
            failure,
            status,
            code,
            detail,
        }
    }
}

/// An error and its causes, as one line: `outer: cause: root cause`. (The
/// SDK's own `DisplayErrorContext` appends a multi-line `Debug` dump.)
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Wrappers often repeat their cause's text; say it once.
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn service(status: Option<u16>, code: Option<&str>, detail: &str) -> Error {
        Error::Api {
            call: "CompleteLifecycleAction",
            failure: Failure::Service,
            status,
            code: code.map(str::to_owned),
            detail: detail.to_owned(),
        }
    }

    #[test]
    fn classifies_errors() {
        struct Case {
            name: &'static str,
            err: Error,
            retryable: bool,
            not_implemented: bool,
        }
        let cases = [
            Case {
                name: "moto's bare 500",
                err: service(Some(500), None, "the AWS API answered 500: no message"),
                retryable: false,
                not_implemented: true,
            },
            Case {
                name: "real AWS internal failure",
                err: service(Some(500), Some("InternalFailure"), "oops"),
                retryable: true,
                not_implemented: false,
            },
            Case {
                name: "explicit not implemented",
                err: service(Some(501), Some("NotImplemented"), "x"),
                retryable: false,
                not_implemented: true,
            },
            Case {
                name: "throttled",
                err: service(Some(400), Some("Throttling"), "Rate exceeded"),
                retryable: true,
                not_implemented: false,
            },
            Case {
                name: "validation error",
                err: service(Some(400), Some("ValidationError"), "no such group"),
                retryable: false,
                not_implemented: false,
            },
            Case {
                name: "timeout",
                err: Error::Api {
                    call: "PutMetricData",
                    failure: Failure::Timeout,
                    status: None,
                    code: None,
                    detail: "no answer".into(),
                },
                retryable: true,
                not_implemented: false,
            },
            Case {
                name: "construction",
                err: Error::Api {
                    call: "PutMetricData",
                    failure: Failure::Construction,
                    status: None,
                    code: None,
                    detail: "missing field".into(),
                },
                retryable: false,
                not_implemented: false,
            },
            Case {
                name: "imds down",
                err: Error::Imds {
                    path: "/latest/meta-data/instance-id".into(),
                    status: None,
                    detail: "connection refused".into(),
                },
                retryable: true,
                not_implemented: false,
            },
            Case {
                name: "imds 404",
                err: Error::Imds {
                    path: "/x".into(),
                    status: Some(404),
                    detail: "not found".into(),
                },
                retryable: false,
                not_implemented: false,
            },
        ];
        for c in cases {
            assert_eq!(c.err.is_retryable(), c.retryable, "{}: retryable", c.name);
            assert_eq!(
                c.err.is_not_implemented(),
                c.not_implemented,
                "{}: not implemented",
                c.name
            );
        }
    }

    #[test]
    fn chain_is_one_line_of_causes() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("dispatch failure")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(chain(&e), "dispatch failure: connection refused");
    }

    #[test]
    fn messages_name_the_call() {
        let e = service(Some(500), None, "the AWS API answered 500: no message");
        assert_eq!(
            e.to_string(),
            "CompleteLifecycleAction: the AWS API answered 500: no message"
        );
    }
}
