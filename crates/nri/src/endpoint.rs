//! A ttrpc endpoint over the NRI multiplexer: serves requests on one logical connection and
//! makes calls on the other, over one stream socket.
//!
//! ttrpc is written here on prost rather than taken from the `ttrpc` crate: that crate brings
//! a second protobuf stack (rust-protobuf) next to the prost types the kubelet side already
//! uses, answers a call to an unknown *service* with InvalidArgument (NRI runtimes only fall
//! back to `StateChange` on Unimplemented), and has no multiplexer. The unary subset NRI needs
//! is small: a request/response envelope and stream-ID bookkeeping.

use std::{
    any::Any,
    collections::HashMap,
    future::Future,
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use futures::FutureExt as _;
use parking_lot::Mutex;
use prost::Message as _;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};

use crate::{
    frame::{
        FrameDecoder, MAX_MESSAGE_LEN, MESSAGE_REQUEST, MESSAGE_RESPONSE, MessageDecoder, MessageHeader, encode_frame,
        encode_message,
    },
    proto::{rpc, ttrpc},
};

/// A ttrpc status code: the gRPC codes, plus any other number a peer may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// Success.
    Ok,
    /// The call was cancelled.
    Cancelled,
    /// A handler failed.
    Unknown,
    /// The request could not be decoded.
    InvalidArgument,
    /// The call's deadline passed.
    DeadlineExceeded,
    /// Something named does not exist.
    NotFound,
    /// Something to create exists already.
    AlreadyExists,
    /// Not allowed.
    PermissionDenied,
    /// A message exceeded the 4 MiB limit.
    ResourceExhausted,
    /// The system is not in the state the call needs.
    FailedPrecondition,
    /// The call was aborted.
    Aborted,
    /// A value out of range.
    OutOfRange,
    /// No such service or method: NRI runtimes then fall back to `StateChange`.
    Unimplemented,
    /// The peer sent something it should not have, or a handler panicked.
    Internal,
    /// The connection is gone.
    Unavailable,
    /// Data was lost.
    DataLoss,
    /// The caller is not authenticated.
    Unauthenticated,
    /// A number outside the gRPC codes, kept as received.
    Other(i32),
}

/// The gRPC codes in number order, 0 to 16.
const CODES: [Code; 17] = [
    Code::Ok,
    Code::Cancelled,
    Code::Unknown,
    Code::InvalidArgument,
    Code::DeadlineExceeded,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
    Code::Unauthenticated,
];

impl Code {
    /// The code a peer sent.
    pub fn from_i32(number: i32) -> Self {
        usize::try_from(number)
            .ok()
            .and_then(|i| CODES.get(i).copied())
            .unwrap_or(Self::Other(number))
    }

    /// The number on the wire.
    pub fn as_i32(self) -> i32 {
        match self {
            Self::Other(number) => number,
            // The position in `CODES` is the number; at most 16.
            known => CODES.iter().position(|c| *c == known).map_or(-1, |i| i as i32),
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Other(number) => write!(f, "{number}"),
            known => write!(f, "{known:?} ({})", known.as_i32()),
        }
    }
}

/// A ttrpc status: the outcome of a failed call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ttrpc status {code}: {message}")]
pub struct Status {
    /// Status code.
    pub code: Code,
    /// Human-readable message.
    pub message: String,
}

impl Status {
    /// A status with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// A request as a handler receives it.
#[derive(Debug, Clone)]
pub struct IncomingRequest {
    /// Fully qualified service, e.g. `nri.pkg.api.v1alpha1.Plugin`.
    pub service: String,
    /// Method, e.g. `RunPodSandbox`.
    pub method: String,
    /// Encoded request message.
    pub payload: Bytes,
    /// The caller's deadline, if it sent one.
    pub timeout: Option<Duration>,
}

/// Serves the requests arriving on an endpoint.
pub trait RequestHandler: Send + Sync + 'static {
    /// Answers one request with an encoded response message or a status. A panic is answered
    /// as [`Code::Internal`].
    fn handle(&self, request: IncomingRequest) -> impl Future<Output = Result<Vec<u8>, Status>> + Send;
}

type Pending = Arc<Mutex<HashMap<u32, oneshot::Sender<ttrpc::Response>>>>;

/// One side of an NRI connection. Cloning shares the connection.
#[derive(Clone)]
pub struct Endpoint {
    outgoing: mpsc::Sender<Bytes>,
    pending: Pending,
    next_stream: Arc<AtomicU32>,
    call_conn: u32,
    closed: watch::Receiver<Option<String>>,
    tasks: Arc<Vec<JoinHandle<()>>>,
}

impl Endpoint {
    /// Starts serving `serve_conn` with `handler` and calling on `call_conn`, over `stream`.
    /// The server is running when this returns, so calls may be made at once.
    pub fn start<S, H>(stream: S, serve_conn: u32, call_conn: u32, handler: Arc<H>) -> Self
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
        H: RequestHandler,
    {
        let (read_half, mut write_half) = tokio::io::split(stream);
        let (outgoing, mut to_write) = mpsc::channel::<Bytes>(1024);
        let (closed_tx, closed) = watch::channel(None);
        let closed_tx = Arc::new(closed_tx);
        let pending: Pending = Arc::default();

        let writer_closed = closed_tx.clone();
        let writer = tokio::spawn(async move {
            while let Some(frame) = to_write.recv().await {
                if let Err(e) = write_half.write_all(&frame).await {
                    close(&writer_closed, format!("write failed: {e}"));
                    return;
                }
            }
        });
        let reader = tokio::spawn(read_loop(
            read_half,
            serve_conn,
            call_conn,
            handler,
            outgoing.clone(),
            pending.clone(),
            closed_tx,
        ));
        Self {
            outgoing,
            pending,
            next_stream: Arc::new(AtomicU32::new(1)),
            call_conn,
            closed,
            tasks: Arc::new(vec![reader, writer]),
        }
    }

    /// Calls `service`/`method` on the peer. A call fails with [`Code::Unavailable`] when the
    /// connection closes and [`Code::DeadlineExceeded`] after `timeout`.
    pub async fn call(
        &self,
        service: &str,
        method: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Bytes, Status> {
        let stream_id = self.next_stream.fetch_add(2, Ordering::Relaxed);
        let request = ttrpc::Request {
            service: service.to_string(),
            method: method.to_string(),
            payload,
            timeout_nano: i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX),
            metadata: vec![],
        }
        .encode_to_vec();
        if request.len() > MAX_MESSAGE_LEN {
            return Err(Status::new(
                Code::ResourceExhausted,
                format!(
                    "{service}/{method} request of {} bytes exceeds the ttrpc limit",
                    request.len()
                ),
            ));
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(stream_id, tx);
        // The reader marks the connection closed before it drops the pending calls, so a call
        // registered after that drop sees the mark here.
        if self.is_closed() {
            self.pending.lock().remove(&stream_id);
            return Err(self.unavailable());
        }
        let header = MessageHeader {
            stream_id,
            message_type: MESSAGE_REQUEST,
            flags: 0,
        };
        let sent = self.outgoing.send(frame(self.call_conn, header, &request)).await;
        if sent.is_err() {
            self.pending.lock().remove(&stream_id);
            return Err(self.unavailable());
        }
        let response = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(response)) => response,
            Ok(Err(_)) => return Err(self.unavailable()),
            Err(_) => {
                self.pending.lock().remove(&stream_id);
                return Err(Status::new(
                    Code::DeadlineExceeded,
                    format!("{service}/{method} got no answer within {timeout:?}"),
                ));
            }
        };
        match response.status {
            Some(s) if s.code != Code::Ok.as_i32() => Err(Status::new(Code::from_i32(s.code), s.message)),
            _ => Ok(Bytes::from(response.payload)),
        }
    }

    fn unavailable(&self) -> Status {
        let reason = self
            .closed
            .borrow()
            .clone()
            .unwrap_or_else(|| "connection closed".into());
        Status::new(Code::Unavailable, reason)
    }

    /// Resolves when the connection closes, with the reason.
    pub async fn closed(&self) -> String {
        let mut closed = self.closed.clone();
        match closed.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "connection closed".into(),
        }
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.closed.borrow().is_some()
    }

    /// Closes the connection.
    pub fn close(&self) {
        for task in self.tasks.iter() {
            task.abort();
        }
        // Pending calls see their sender dropped and fail as unavailable.
        self.pending.lock().clear();
    }
}

fn close(closed: &watch::Sender<Option<String>>, reason: String) {
    closed.send_if_modified(|r| {
        if r.is_none() {
            *r = Some(reason);
            true
        } else {
            false
        }
    });
}

fn frame(conn: u32, header: MessageHeader, data: &[u8]) -> Bytes {
    let mut message = BytesMut::new();
    encode_message(header, data, &mut message);
    let mut out = BytesMut::new();
    encode_frame(conn, &message, &mut out);
    out.freeze()
}

async fn read_loop<R, H>(
    mut read_half: R,
    serve_conn: u32,
    call_conn: u32,
    handler: Arc<H>,
    outgoing: mpsc::Sender<Bytes>,
    pending: Pending,
    closed: Arc<watch::Sender<Option<String>>>,
) where
    R: AsyncRead + Unpin,
    H: RequestHandler,
{
    let mut frames = FrameDecoder::default();
    let mut serve = MessageDecoder::default();
    let mut calls = MessageDecoder::default();
    let mut buf = vec![0u8; 64 * 1024];
    let reason = 'read: loop {
        let n = match read_half.read(&mut buf).await {
            Ok(0) => break 'read "peer closed the connection".to_string(),
            Ok(n) => n,
            Err(e) => break 'read format!("read failed: {e}"),
        };
        frames.push(&buf[..n]);
        loop {
            let (conn, payload) = match frames.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => break 'read format!("malformed input: {e}"),
            };
            let decoder = if conn == serve_conn {
                &mut serve
            } else if conn == call_conn {
                &mut calls
            } else {
                // As the Go multiplexer does: frames for a connection nobody opened are dropped.
                tracing::debug!(conn, "dropping frame for an unused multiplexer connection");
                continue;
            };
            decoder.push(&payload);
            loop {
                let message = match decoder.next_message() {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => break 'read format!("malformed input: {e}"),
                };
                match (conn == serve_conn, message.header.message_type) {
                    (true, MESSAGE_REQUEST) => {
                        let handler = handler.clone();
                        let outgoing = outgoing.clone();
                        tokio::spawn(async move {
                            let response = serve_request(&*handler, &message.data).await;
                            let header = MessageHeader {
                                stream_id: message.header.stream_id,
                                message_type: MESSAGE_RESPONSE,
                                flags: 0,
                            };
                            let _ = outgoing.send(frame(serve_conn, header, &response)).await;
                        });
                    }
                    (false, MESSAGE_RESPONSE) => match ttrpc::Response::decode(message.data) {
                        Ok(response) => {
                            if let Some(waiter) = pending.lock().remove(&message.header.stream_id) {
                                let _ = waiter.send(response);
                            }
                        }
                        Err(e) => break 'read format!("malformed ttrpc response: {e}"),
                    },
                    (_, other) => {
                        tracing::debug!(conn, message_type = other, "ignoring unexpected ttrpc message");
                    }
                }
            }
        }
    };
    tracing::debug!(%reason, "NRI connection closed");
    close(&closed, reason);
    pending.lock().clear();
}

async fn serve_request<H: RequestHandler>(handler: &H, data: &[u8]) -> Vec<u8> {
    let result = match ttrpc::Request::decode(data) {
        Ok(request) => {
            let timeout = u64::try_from(request.timeout_nano)
                .ok()
                .filter(|n| *n > 0)
                .map(Duration::from_nanos);
            let method = request.method.clone();
            let handled = handler.handle(IncomingRequest {
                service: request.service,
                method: request.method,
                payload: Bytes::from(request.payload),
                timeout,
            });
            // A panic would kill this request's task without an answer: the runtime would wait
            // out its request timeout and then drop the plugin. Answering an error fails only
            // this call. AssertUnwindSafe: state the handler left half-updated is no worse off
            // than if the task had died, and the connection itself is untouched.
            match AssertUnwindSafe(handled).catch_unwind().await {
                Ok(result) => result,
                Err(panic) => {
                    let reason = panic_message(panic.as_ref());
                    tracing::error!(%method, panic = %reason, "NRI request handler panicked; answering the call with an error");
                    Err(Status::new(
                        Code::Internal,
                        format!("{method}: the plugin's handler panicked: {reason}"),
                    ))
                }
            }
        }
        Err(e) => Err(Status::new(
            Code::InvalidArgument,
            format!("malformed ttrpc request: {e}"),
        )),
    };
    let response = match result {
        Ok(payload) if payload.len() + 16 > MAX_MESSAGE_LEN => ttrpc::Response {
            status: Some(status(
                Code::ResourceExhausted,
                "response exceeds the ttrpc message limit",
            )),
            payload: vec![],
        },
        Ok(payload) => ttrpc::Response { status: None, payload },
        Err(s) => ttrpc::Response {
            status: Some(status(s.code, &s.message)),
            payload: vec![],
        },
    };
    response.encode_to_vec()
}

/// The text of a panic's payload (what `panic!` was given), when it is text.
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a non-text panic payload")
}

fn status(code: Code, message: &str) -> rpc::Status {
    rpc::Status {
        code: code.as_i32(),
        message: message.to_string(),
        details: vec![],
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn codes_round_trip_their_numbers_and_keep_unknown_ones() {
        for number in 0..=16 {
            let code = super::Code::from_i32(number);
            assert!(!matches!(code, super::Code::Other(_)), "{number}");
            assert_eq!(code.as_i32(), number);
        }
        assert_eq!(super::Code::from_i32(12), super::Code::Unimplemented);
        assert_eq!(super::Code::from_i32(99), super::Code::Other(99));
        assert_eq!(super::Code::from_i32(-1).as_i32(), -1);
        assert_eq!(super::Code::Unimplemented.to_string(), "Unimplemented (12)");
    }
    use super::*;
    use crate::frame::{PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN};

    struct Echo;

    impl RequestHandler for Echo {
        async fn handle(&self, request: IncomingRequest) -> Result<Vec<u8>, Status> {
            match request.method.as_str() {
                "Echo" => Ok(request.payload.to_vec()),
                "Slow" => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok(vec![])
                }
                other => Err(Status::new(Code::Unimplemented, format!("method {other}"))),
            }
        }
    }

    #[tokio::test]
    async fn calls_cross_in_both_directions() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let plugin = Endpoint::start(a, PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN, Arc::new(Echo));
        let runtime = Endpoint::start(b, RUNTIME_SERVICE_CONN, PLUGIN_SERVICE_CONN, Arc::new(Echo));
        let t = Duration::from_secs(1);
        assert_eq!(&runtime.call("s", "Echo", b"hi".to_vec(), t).await.unwrap()[..], b"hi");
        assert_eq!(&plugin.call("s", "Echo", b"yo".to_vec(), t).await.unwrap()[..], b"yo");
        let err = runtime.call("s", "Nope", vec![], t).await.unwrap_err();
        assert_eq!(err.code, Code::Unimplemented);
        let err = runtime
            .call("s", "Slow", vec![], Duration::from_millis(20))
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::DeadlineExceeded);
        // Concurrent calls are matched to their own answers.
        let calls = (0..20u8).map(|i| runtime.call("s", "Echo", vec![i], t));
        let answers = futures::future::join_all(calls).await;
        for (i, a) in answers.into_iter().enumerate() {
            assert_eq!(a.unwrap()[..], [i as u8]);
        }
        plugin.close();
        let reason = runtime.closed().await;
        assert!(reason.contains("closed"), "{reason}");
        assert_eq!(
            runtime.call("s", "Echo", vec![], t).await.unwrap_err().code,
            Code::Unavailable
        );
    }

    proptest::proptest! {
        #[test]
        fn request_decoding_takes_arbitrary_bytes(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            let response = rt.block_on(serve_request(&Echo, &data));
            // Whatever came in, a well-formed ttrpc.Response goes out.
            proptest::prop_assert!(ttrpc::Response::decode(&response[..]).is_ok());
        }
    }

    #[tokio::test]
    async fn malformed_input_closes_the_connection_with_a_reason() {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let plugin = Endpoint::start(a, PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN, Arc::new(Echo));
        b.write_all(&[0, 0, 0, 1, 0x7f, 0xff, 0xff, 0xff]).await.unwrap();
        let reason = tokio::time::timeout(Duration::from_secs(2), plugin.closed())
            .await
            .unwrap();
        assert!(reason.contains("above the"), "{reason}");
    }
}
