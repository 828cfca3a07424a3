//! Requests to the kernel's routing netlink that change things, on a blocking socket: several
//! messages go out in one datagram and each gets its own acknowledgement, with the kernel's
//! errno and its extended-ack message (`Nexthop has invalid gateway`) kept.
//!
//! Like [`crate::netlink`], this uses `netlink-sys` and the `netlink-packet-*` types directly
//! rather than `rtnetlink`: the attach path is a handful of fixed messages whose cost is the
//! point, `rtnetlink` sends one message per request and drops the extended-ack text, and a
//! socket must be created in one namespace and used from another thread, which a plain blocking
//! socket does without a connection task.

use std::fmt;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_REQUEST, NLMSG_ERROR, NetlinkBuffer, NetlinkMessage, NlaBuffer,
    NlasIterator,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use nix::errno::Errno;

/// `struct nlmsghdr`.
const HEADER_LEN: usize = 16;
/// `NLMSGERR_ATTR_MSG`: the extended ack's message.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// Opens a routing netlink socket in the calling thread's namespace, set up for requests:
/// extended acks on, acks without the request echoed, strict checking of dump requests (so
/// that dumps filter by interface in the kernel).
pub(crate) fn new_socket() -> std::io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    socket.set_ext_ack(true)?;
    socket.set_cap_ack(true)?;
    socket.set_netlink_get_strict_chk(true)?;
    Ok(socket)
}

/// What the kernel answered a request with: its errno and, when it gave one, its message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KernelError {
    /// The errno.
    pub errno: Errno,
    /// The extended-ack message, e.g. `Nexthop has invalid gateway`.
    pub message: Option<String>,
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.errno.desc())?;
        if let Some(message) = &self.message {
            write!(f, " ({message})")?;
        }
        Ok(())
    }
}

impl std::error::Error for KernelError {}

/// A request could not be made, or its answer was not understood.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RtnlError {
    /// The socket failed.
    #[error("routing netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    /// The kernel refused the request.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The answer did not decode.
    #[error("undecodable netlink answer: {0}")]
    Decode(String),
}

impl RtnlError {
    /// The errno, when the kernel refused.
    pub(crate) fn errno(&self) -> Option<Errno> {
        match self {
            Self::Kernel(k) => Some(k.errno),
            _ => None,
        }
    }
}

/// A routing netlink socket making requests.
pub(crate) struct Rtnl {
    socket: Socket,
    sequence: u32,
    buffer: Vec<u8>,
}

impl Rtnl {
    /// A socket in the calling thread's namespace.
    pub(crate) fn new() -> Result<Self, RtnlError> {
        new_socket().map(Self::from_socket).map_err(RtnlError::Socket)
    }

    /// Uses a socket made by [`new_socket`] (possibly in another namespace).
    pub(crate) fn from_socket(socket: Socket) -> Self {
        Self {
            socket,
            sequence: 0,
            buffer: Vec::with_capacity(crate::netlink::RECEIVE_BUFFER),
        }
    }

    /// Sends `requests` (each with its extra flags, e.g. `NLM_F_CREATE | NLM_F_EXCL`) in one
    /// datagram and returns the kernel's answer to each, in order. The kernel handles them one
    /// after the other and goes on after a failed one.
    pub(crate) fn execute(
        &mut self,
        requests: Vec<(RouteNetlinkMessage, u16)>,
    ) -> Result<Vec<Result<(), KernelError>>, RtnlError> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let first = self.sequence.wrapping_add(1);
        let mut datagram = Vec::new();
        for (request, flags) in requests {
            self.sequence = self.sequence.wrapping_add(1);
            let mut message = NetlinkMessage::from(request);
            message.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
            message.header.sequence_number = self.sequence;
            message.finalize();
            let start = datagram.len();
            datagram.resize(start + message.buffer_len(), 0);
            message.serialize(&mut datagram[start..]);
        }
        let count = self.sequence.wrapping_sub(first).wrapping_add(1) as usize;
        self.socket.send(&datagram, 0).map_err(RtnlError::Socket)?;

        let mut answers: Vec<Option<Result<(), KernelError>>> = vec![None; count];
        let mut pending = count;
        while pending > 0 {
            crate::netlink::receive(&self.socket, &mut self.buffer).map_err(RtnlError::Socket)?;
            for ack in read_acks(&self.buffer).map_err(RtnlError::Decode)? {
                let slot = ack.sequence.wrapping_sub(first) as usize;
                if let Some(answer @ None) = answers.get_mut(slot) {
                    *answer = Some(ack.result);
                    pending -= 1;
                }
            }
        }
        Ok(answers.into_iter().flatten().collect())
    }

    /// Sends one request and returns the kernel's answer as a message: for `RTM_GETLINK` by
    /// name or index, the link. `ENODEV` is `Ok(None)`.
    pub(crate) fn get(&mut self, request: RouteNetlinkMessage) -> Result<Option<RouteNetlinkMessage>, RtnlError> {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let mut message = NetlinkMessage::from(request);
        message.header.flags = NLM_F_REQUEST;
        message.header.sequence_number = sequence;
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        self.socket.send(&bytes, 0).map_err(RtnlError::Socket)?;
        loop {
            crate::netlink::receive(&self.socket, &mut self.buffer).map_err(RtnlError::Socket)?;
            let mut rest = self.buffer.as_slice();
            while !rest.is_empty() {
                let header = NetlinkBuffer::new_checked(rest).map_err(|e| RtnlError::Decode(e.to_string()))?;
                let length = header.length() as usize;
                let this = &rest[..length.min(rest.len())];
                rest = rest.get(length.next_multiple_of(4)..).unwrap_or_default();
                if header.sequence_number() != sequence {
                    continue;
                }
                if header.message_type() == NLMSG_ERROR {
                    let ack = parse_ack(&header).map_err(RtnlError::Decode)?;
                    return match ack.result {
                        Err(KernelError {
                            errno: Errno::ENODEV, ..
                        }) => Ok(None),
                        Err(e) => Err(e.into()),
                        // An ack without data answers nothing we asked.
                        Ok(()) => Err(RtnlError::Decode("an ack where an object was expected".into())),
                    };
                }
                let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(this)
                    .map_err(|e| RtnlError::Decode(e.to_string()))?;
                return match message.payload {
                    netlink_packet_core::NetlinkPayload::InnerMessage(inner) => Ok(Some(inner)),
                    other => Err(RtnlError::Decode(format!("unexpected answer {other:?}"))),
                };
            }
        }
    }

    /// Dumps a table with `request`, reducing each message with `keep` (see
    /// [`crate::netlink::dump`]); an interrupted dump is repeated.
    pub(crate) fn dump<T>(
        &mut self,
        what: &'static str,
        request: RouteNetlinkMessage,
        mut keep: impl FnMut(u16, &[u8]) -> Result<Option<T>, netlink_packet_core::DecodeError>,
    ) -> Result<Vec<T>, RtnlError> {
        let mut retries = crate::netlink::Retries::default();
        crate::netlink::dump_with_retries(what, &mut retries, || {
            self.sequence = self.sequence.wrapping_add(1);
            crate::netlink::dump(
                &self.socket,
                &mut self.buffer,
                what,
                request.clone(),
                self.sequence,
                &mut keep,
            )
        })
        .map_err(|e| match e {
            crate::netlink::NetlinkError::Kernel { errno, .. } => {
                RtnlError::Kernel(KernelError { errno, message: None })
            }
            crate::netlink::NetlinkError::Socket(e) => RtnlError::Socket(e),
            other => RtnlError::Decode(other.to_string()),
        })
    }
}

/// One acknowledgement. Protocol-independent (`struct nlmsgerr` is the same for every netlink
/// family), so the generic netlink requests ([`crate::ethtool`]) read theirs with it too.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Ack {
    pub(crate) sequence: u32,
    pub(crate) result: Result<(), KernelError>,
}

/// The acknowledgements in one datagram; other messages are skipped.
fn read_acks(datagram: &[u8]) -> Result<Vec<Ack>, String> {
    let mut acks = Vec::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let header = NetlinkBuffer::new_checked(rest).map_err(|e| format!("bad netlink header: {e}"))?;
        let length = header.length() as usize;
        rest = rest.get(length.next_multiple_of(4)..).unwrap_or_default();
        if header.message_type() == NLMSG_ERROR {
            acks.push(parse_ack(&header)?);
        }
    }
    Ok(acks)
}

/// Reads `struct nlmsgerr` and, when flagged, the extended-ack attributes after it.
pub(crate) fn parse_ack(message: &NetlinkBuffer<&[u8]>) -> Result<Ack, String> {
    let payload = message.payload();
    let code = payload
        .get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or("truncated ack")?;
    let sequence = message.sequence_number();
    if code == 0 {
        return Ok(Ack {
            sequence,
            result: Ok(()),
        });
    }
    let mut text = None;
    if message.flags() & NLM_F_ACK_TLVS != 0 {
        // The request's header is echoed; its payload too unless the ack is capped.
        let echoed = if message.flags() & NLM_F_CAPPED != 0 {
            HEADER_LEN
        } else {
            payload
                .get(4..8)
                .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .ok_or("truncated ack")?
                .next_multiple_of(4)
        };
        for nla in NlasIterator::new(payload.get(4 + echoed..).unwrap_or_default()) {
            let nla: NlaBuffer<&[u8]> = nla.map_err(|e| format!("bad extended ack: {e}"))?;
            if nla.kind() == NLMSGERR_ATTR_MSG {
                let value = nla.value();
                let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
                text = Some(String::from_utf8_lossy(&value[..end]).into_owned());
            }
        }
    }
    Ok(Ack {
        sequence,
        result: Err(KernelError {
            errno: Errno::from_raw(code.saturating_neg()),
            message: text,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `NLMSG_ERROR` for `sequence` with `code`, capped, with an extended-ack message.
    fn ack(sequence: u32, code: i32, text: Option<&str>) -> Vec<u8> {
        let mut tlvs = Vec::new();
        if let Some(text) = text {
            let value = [text.as_bytes(), &[0]].concat();
            tlvs.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
            tlvs.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
            tlvs.extend_from_slice(&value);
            tlvs.resize(tlvs.len().next_multiple_of(4), 0);
        }
        let flags = NLM_F_CAPPED | if text.is_some() { NLM_F_ACK_TLVS } else { 0 };
        let length = HEADER_LEN + 4 + HEADER_LEN + tlvs.len();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(length as u32).to_ne_bytes());
        bytes.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        bytes.extend_from_slice(&flags.to_ne_bytes());
        bytes.extend_from_slice(&sequence.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(&code.to_ne_bytes());
        // The echoed request header.
        bytes.extend_from_slice(&[0; HEADER_LEN]);
        bytes.extend_from_slice(&tlvs);
        bytes
    }

    #[test]
    fn acks_carry_errno_and_extended_message() {
        let datagram = [
            ack(7, 0, None),
            ack(8, -101, Some("Nexthop has invalid gateway")),
            ack(9, -17, None),
        ]
        .concat();
        let acks = read_acks(&datagram).expect("decodes");
        assert_eq!(acks.len(), 3);
        assert_eq!(
            acks[0],
            Ack {
                sequence: 7,
                result: Ok(())
            }
        );
        let failed = acks[1].result.clone().expect_err("ENETUNREACH");
        assert_eq!(failed.errno, Errno::ENETUNREACH);
        assert_eq!(
            failed.to_string(),
            "Network is unreachable (Nexthop has invalid gateway)"
        );
        assert_eq!(acks[2].result.clone().expect_err("EEXIST").to_string(), "File exists");
    }

    proptest::proptest! {
        /// Any bytes decode to acks or an error, never a panic.
        #[test]
        fn arbitrary_datagrams_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = read_acks(&bytes);
        }
    }

    #[test]
    fn a_real_request_is_answered() {
        // Asking for a link that cannot exist: answered ENODEV, which `get` reports as none.
        let mut rtnl = Rtnl::new().expect("socket");
        let mut link = netlink_packet_route::link::LinkMessage::default();
        link.attributes
            .push(netlink_packet_route::link::LinkAttribute::IfName("netdra-none0".into()));
        assert!(
            rtnl.get(RouteNetlinkMessage::GetLink(link))
                .expect("answered")
                .is_none()
        );
    }
}
