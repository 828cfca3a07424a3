//! An interface's ethtool features (`ethtool -k` / `-K`) through the kernel's `ethtool` generic
//! netlink family, in the calling thread's network namespace.
//!
//! Rules:
//! - The family's id is resolved by name (`CTRL_CMD_GETFAMILY` "ethtool") once per
//!   [`Ethtool`]; it differs between boots and kernels.
//! - Features are read with `ETHTOOL_MSG_FEATURES_GET` in the verbose (named) bitset format: a
//!   feature is known by its kernel name (`tx-checksum-ip-generic`), never by its bit number,
//!   which is not ABI. A feature is *changeable* when it is in the device's `hw` set and not in
//!   the kernel's `nochange` set (what `ethtool -k` prints as `[fixed]` otherwise).
//! - A change is checked against a fresh read first: an unknown name or a feature this device
//!   cannot change refuses the whole request before anything is sent, so nothing is
//!   half-applied. (The kernel itself would silently ignore a feature outside `hw`.)
//! - `ETHTOOL_MSG_FEATURES_SET` carries a `WANTED` bitset of only the features named, with a
//!   mask (bits listed by name, each with or without `VALUE`, and no `NOMASK`), so every other
//!   feature stays as it is. The request asks for the reply (no `ETHTOOL_FLAG_OMIT_REPLY`),
//!   whose `WANTED` lists the features the kernel did not bring to the asked value (a
//!   dependency, the driver): that is an error naming the first such feature.
//! - The kernel's refusals keep its errno and extended-ack text ([`KernelError`]), read by the
//!   same acknowledgement parser as the routing requests ([`crate::rtnl`]).
//!
//! The messages are built by hand from netlink-packet-core's [`Nla`] rather than with
//! `netlink-packet-generic` (which is compatible with netlink-packet-core 0.9): two commands
//! and one controller lookup are a few nested attributes, the crate would add a dependency
//! (and `zerocopy`) for its 4-byte header, and the golden-byte tests below show every byte
//! sent. The `ethtool` crate is not used: it brings a second, async netlink stack.

use std::collections::BTreeMap;

use crate::rtnl::KernelError;
use netlink_packet_core::{
    Emitable, NLA_F_NESTED, NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR, NetlinkBuffer, Nla, NlaBuffer, NlasIterator,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_GENERIC};

// The controller family (include/uapi/linux/genetlink.h).
/// `GENL_ID_CTRL` (`NLMSG_MIN_TYPE`): the controller's fixed message type.
const GENL_ID_CTRL: u16 = 0x10;
/// `CTRL_CMD_NEWFAMILY`: the controller's answer to a family lookup.
const CTRL_CMD_NEWFAMILY: u8 = 1;
/// `CTRL_CMD_GETFAMILY`: a family lookup.
const CTRL_CMD_GETFAMILY: u8 = 3;
/// `CTRL_ATTR_FAMILY_ID` (u16).
const CTRL_ATTR_FAMILY_ID: u16 = 1;
/// `CTRL_ATTR_FAMILY_NAME` (NUL-terminated string).
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
/// The controller's version asked for (the kernel does not check it; libnl sends 1).
const CTRL_VERSION: u8 = 1;
/// `struct genlmsghdr`: command, version, two reserved bytes (`GENL_HDRLEN`).
const GENL_HEADER_LEN: usize = 4;
/// `struct nlmsghdr`.
const NETLINK_HEADER_LEN: usize = 16;

// The ethtool family (include/uapi/linux/ethtool_netlink.h; since 6.13 its enums are in
// ethtool_netlink_generated.h, same values).
/// `ETHTOOL_GENL_NAME`.
const ETHTOOL_GENL_NAME: &str = "ethtool";
/// `ETHTOOL_GENL_VERSION`.
const ETHTOOL_GENL_VERSION: u8 = 1;
/// `ETHTOOL_MSG_FEATURES_GET` (userspace to kernel).
const ETHTOOL_MSG_FEATURES_GET: u8 = 11;
/// `ETHTOOL_MSG_FEATURES_SET` (userspace to kernel).
const ETHTOOL_MSG_FEATURES_SET: u8 = 12;
/// `ETHTOOL_MSG_FEATURES_GET_REPLY` (kernel to userspace).
const ETHTOOL_MSG_FEATURES_GET_REPLY: u8 = 11;
/// `ETHTOOL_MSG_FEATURES_SET_REPLY` (kernel to userspace).
const ETHTOOL_MSG_FEATURES_SET_REPLY: u8 = 12;
/// `ETHTOOL_A_HEADER_DEV_INDEX` (u32), in the request header nest.
const ETHTOOL_A_HEADER_DEV_INDEX: u16 = 1;
/// `ETHTOOL_A_FEATURES_HEADER` (nest of `ETHTOOL_A_HEADER_*`).
const ETHTOOL_A_FEATURES_HEADER: u16 = 1;
/// `ETHTOOL_A_FEATURES_HW` (bitset): what the device can change, with a mask of all features.
const ETHTOOL_A_FEATURES_HW: u16 = 2;
/// `ETHTOOL_A_FEATURES_WANTED` (bitset): what was asked for.
const ETHTOOL_A_FEATURES_WANTED: u16 = 3;
/// `ETHTOOL_A_FEATURES_ACTIVE` (bitset): what is on.
const ETHTOOL_A_FEATURES_ACTIVE: u16 = 4;
/// `ETHTOOL_A_FEATURES_NOCHANGE` (bitset): what may never change.
const ETHTOOL_A_FEATURES_NOCHANGE: u16 = 5;
/// `ETHTOOL_A_BITSET_NOMASK` (flag): a list of the bits that are set, without a mask.
const ETHTOOL_A_BITSET_NOMASK: u16 = 1;
/// `ETHTOOL_A_BITSET_BITS` (nest of `ETHTOOL_A_BITSET_BITS_BIT`).
const ETHTOOL_A_BITSET_BITS: u16 = 3;
/// `ETHTOOL_A_BITSET_BITS_BIT` (nest of `ETHTOOL_A_BITSET_BIT_*`).
const ETHTOOL_A_BITSET_BITS_BIT: u16 = 1;
/// `ETHTOOL_A_BITSET_BIT_NAME` (NUL-terminated string).
const ETHTOOL_A_BITSET_BIT_NAME: u16 = 2;
/// `ETHTOOL_A_BITSET_BIT_VALUE` (flag): the bit is set.
const ETHTOOL_A_BITSET_BIT_VALUE: u16 = 3;

/// One feature of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FeatureState {
    /// On now.
    pub active: bool,
    /// Asked for (by the user or the driver's default); may be on while `active` is off when a
    /// dependency is missing.
    pub wanted: bool,
    /// This device lets it be turned on and off (in `hw`, not in `nochange`).
    pub changeable: bool,
}

/// An ethtool request that did not happen or did not take.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EthtoolError {
    /// The generic netlink socket failed.
    #[error("ethtool netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    /// The kernel has no `ethtool` generic netlink family (built without it, or before 5.6).
    #[error("the kernel has no ethtool netlink family: {0}")]
    NoFamily(#[source] KernelError),
    /// The kernel refused a request about an interface.
    #[error("ethtool features of interface {index}: the kernel refused: {source}")]
    Kernel {
        /// The interface's index.
        index: u32,
        /// The errno and extended-ack text.
        #[source]
        source: KernelError,
    },
    /// No feature of that name on the interface.
    #[error("interface {index}: no ethtool feature named {feature}")]
    UnknownFeature {
        /// The interface's index.
        index: u32,
        /// The name asked for.
        feature: String,
    },
    /// The feature exists but this device cannot change it (`[fixed]`).
    #[error("interface {index}: ethtool feature {feature} cannot be changed on this device")]
    NotChangeable {
        /// The interface's index.
        index: u32,
        /// The feature.
        feature: String,
    },
    /// The kernel accepted the request but did not bring the feature to the value asked.
    #[error(
        "interface {index}: asked for {feature} {}, the kernel left it {}",
        on_off(*wanted),
        on_off(!*wanted)
    )]
    NotApplied {
        /// The interface's index.
        index: u32,
        /// The feature.
        feature: String,
        /// The value asked for.
        wanted: bool,
    },
    /// The kernel's answer did not decode.
    #[error("ethtool features of interface {index}: undecodable answer: {reason}")]
    Decode {
        /// The interface's index (0 for the family lookup).
        index: u32,
        /// What was wrong.
        reason: String,
    },
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// A generic netlink socket talking to the `ethtool` family, in the namespace of the thread
/// that made it.
pub struct Ethtool {
    socket: Socket,
    family: u16,
    sequence: u32,
    buffer: Vec<u8>,
}

impl std::fmt::Debug for Ethtool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ethtool")
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

impl Ethtool {
    /// Opens a socket in the calling thread's network namespace and resolves the family.
    pub fn new() -> Result<Self, EthtoolError> {
        let socket = new_socket().map_err(EthtoolError::Socket)?;
        let mut ethtool = Self {
            socket,
            family: 0,
            sequence: 0,
            buffer: Vec::with_capacity(crate::netlink::RECEIVE_BUFFER),
        };
        let sequence = ethtool.next_sequence();
        let reply = ethtool
            .request(&family_request(sequence), sequence)
            .map_err(|e| e.into_error(0, EthtoolError::NoFamily))?;
        let payload = reply.ok_or_else(|| EthtoolError::Decode {
            index: 0,
            reason: "no answer to the family lookup".into(),
        })?;
        ethtool.family = parse_family_id(&payload).map_err(|reason| EthtoolError::Decode { index: 0, reason })?;
        Ok(ethtool)
    }

    /// Every feature of interface `index`, by name.
    pub fn features(&mut self, index: u32) -> Result<BTreeMap<String, FeatureState>, EthtoolError> {
        let sequence = self.next_sequence();
        let reply = self
            .request(&features_get_request(self.family, sequence, index), sequence)
            .map_err(|e| e.into_error(index, |source| EthtoolError::Kernel { index, source }))?
            .ok_or_else(|| EthtoolError::Decode {
                index,
                reason: "no features in the answer".into(),
            })?;
        parse_features(&reply).map_err(|reason| EthtoolError::Decode { index, reason })
    }

    /// Turns the features named in `wanted` on (`true`) or off (`false`) on interface `index`,
    /// leaving the others as they are; returns the features whose active state changed, with
    /// their new state (features the kernel switched along with them included).
    pub fn set_features(
        &mut self,
        index: u32,
        wanted: &BTreeMap<String, bool>,
    ) -> Result<BTreeMap<String, bool>, EthtoolError> {
        if wanted.is_empty() {
            return Ok(BTreeMap::new());
        }
        let current = self.features(index)?;
        check_changeable(index, &current, wanted)?;
        let sequence = self.next_sequence();
        let reply = self
            .request(&features_set_request(self.family, sequence, index, wanted), sequence)
            .map_err(|e| e.into_error(index, |source| EthtoolError::Kernel { index, source }))?
            .ok_or_else(|| EthtoolError::Decode {
                index,
                reason: "no reply to the change".into(),
            })?;
        let reply = parse_set_reply(&reply).map_err(|reason| EthtoolError::Decode { index, reason })?;
        check_applied(index, &reply, wanted)?;
        Ok(reply.changed)
    }

    fn next_sequence(&mut self) -> u32 {
        self.sequence = self.sequence.wrapping_add(1);
        self.sequence
    }

    /// Sends one request (which asks for an ack) and returns its reply's generic netlink
    /// payload, if it had one, once the ack came.
    fn request(&mut self, message: &[u8], sequence: u32) -> Result<Option<Vec<u8>>, Failure> {
        self.socket.send(message, 0).map_err(Failure::Socket)?;
        let mut answer = Answer::default();
        loop {
            crate::netlink::receive(&self.socket, &mut self.buffer).map_err(Failure::Socket)?;
            read_answer(&self.buffer, sequence, &mut answer).map_err(Failure::Decode)?;
            match answer.ack.take() {
                None => continue,
                Some(Ok(())) => return Ok(answer.reply),
                Some(Err(kernel)) => return Err(Failure::Kernel(kernel)),
            }
        }
    }
}

/// Opens a generic netlink socket in the calling thread's namespace with extended acks on and
/// acks without the request echoed.
fn new_socket() -> std::io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_GENERIC)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    socket.set_ext_ack(true)?;
    socket.set_cap_ack(true)?;
    Ok(socket)
}

/// Why a request failed, before the caller says what it was about.
#[derive(Debug)]
enum Failure {
    Socket(std::io::Error),
    Kernel(KernelError),
    Decode(String),
}

impl Failure {
    fn into_error(self, index: u32, kernel: impl FnOnce(KernelError) -> EthtoolError) -> EthtoolError {
        match self {
            Self::Socket(e) => EthtoolError::Socket(e),
            Self::Kernel(e) => kernel(e),
            Self::Decode(reason) => EthtoolError::Decode { index, reason },
        }
    }
}

/// Refuses a change naming a feature the interface does not have or cannot change.
pub(crate) fn check_changeable(
    index: u32,
    current: &BTreeMap<String, FeatureState>,
    wanted: &BTreeMap<String, bool>,
) -> Result<(), EthtoolError> {
    for feature in wanted.keys() {
        match current.get(feature) {
            None => {
                return Err(EthtoolError::UnknownFeature {
                    index,
                    feature: feature.clone(),
                });
            }
            Some(state) if !state.changeable => {
                return Err(EthtoolError::NotChangeable {
                    index,
                    feature: feature.clone(),
                });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The kernel's reply to a change: what it did not bring to the asked value, and what changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SetReply {
    /// Features asked for whose active state differs from the request, with the value asked.
    pub(crate) unmet: BTreeMap<String, bool>,
    /// Features whose active state changed, with the new state.
    pub(crate) changed: BTreeMap<String, bool>,
}

/// An error for the first feature of `wanted` the kernel left at the other value.
pub(crate) fn check_applied(index: u32, reply: &SetReply, wanted: &BTreeMap<String, bool>) -> Result<(), EthtoolError> {
    match wanted.iter().find(|(feature, _)| reply.unmet.contains_key(*feature)) {
        Some((feature, wanted)) => Err(EthtoolError::NotApplied {
            index,
            feature: feature.clone(),
            wanted: *wanted,
        }),
        None => Ok(()),
    }
}

/// A request attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attr<'a> {
    U32(u16, u32),
    /// A NUL-terminated string (`NLA_NUL_STRING`).
    Str(u16, &'a str),
    Flag(u16),
    /// Sent with `NLA_F_NESTED`, which the ethtool family's strict validation requires.
    Nest(u16, Vec<Attr<'a>>),
}

impl Nla for Attr<'_> {
    fn value_len(&self) -> usize {
        match self {
            Self::U32(..) => 4,
            Self::Str(_, s) => s.len() + 1,
            Self::Flag(_) => 0,
            Self::Nest(_, inner) => inner.as_slice().buffer_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::U32(kind, _) | Self::Str(kind, _) | Self::Flag(kind) => *kind,
            Self::Nest(kind, _) => kind | NLA_F_NESTED,
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Self::U32(_, value) => buffer[..4].copy_from_slice(&value.to_ne_bytes()),
            Self::Str(_, s) => {
                buffer[..s.len()].copy_from_slice(s.as_bytes());
                buffer[s.len()] = 0;
            }
            Self::Flag(_) => {}
            Self::Nest(_, inner) => inner.as_slice().emit(buffer),
        }
    }
}

/// One generic netlink request message, asking for an ack.
fn genl_message(family: u16, sequence: u32, command: u8, version: u8, attributes: &[Attr<'_>]) -> Vec<u8> {
    let length = NETLINK_HEADER_LEN + GENL_HEADER_LEN + attributes.buffer_len();
    let mut bytes = Vec::with_capacity(length);
    bytes.extend_from_slice(&u32::try_from(length).unwrap_or(u32::MAX).to_ne_bytes());
    bytes.extend_from_slice(&family.to_ne_bytes());
    bytes.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    bytes.extend_from_slice(&sequence.to_ne_bytes());
    // The port id: the kernel fills in the sender's.
    bytes.extend_from_slice(&0u32.to_ne_bytes());
    bytes.extend_from_slice(&[command, version, 0, 0]);
    let start = bytes.len();
    bytes.resize(length, 0);
    attributes.emit(&mut bytes[start..]);
    bytes
}

/// `CTRL_CMD_GETFAMILY` for the `ethtool` family.
pub(crate) fn family_request(sequence: u32) -> Vec<u8> {
    genl_message(
        GENL_ID_CTRL,
        sequence,
        CTRL_CMD_GETFAMILY,
        CTRL_VERSION,
        &[Attr::Str(CTRL_ATTR_FAMILY_NAME, ETHTOOL_GENL_NAME)],
    )
}

/// The request header nest for interface `index`. No `ETHTOOL_A_HEADER_FLAGS`: without
/// `ETHTOOL_FLAG_COMPACT_BITSETS` the bitsets come with names, and without
/// `ETHTOOL_FLAG_OMIT_REPLY` a change is answered with what changed.
fn header(index: u32) -> Attr<'static> {
    Attr::Nest(
        ETHTOOL_A_FEATURES_HEADER,
        vec![Attr::U32(ETHTOOL_A_HEADER_DEV_INDEX, index)],
    )
}

/// `ETHTOOL_MSG_FEATURES_GET` for interface `index`.
pub(crate) fn features_get_request(family: u16, sequence: u32, index: u32) -> Vec<u8> {
    genl_message(
        family,
        sequence,
        ETHTOOL_MSG_FEATURES_GET,
        ETHTOOL_GENL_VERSION,
        &[header(index)],
    )
}

/// `ETHTOOL_MSG_FEATURES_SET` for interface `index`: a `WANTED` bitset with a mask, listing
/// only the features in `wanted` by name, `VALUE` on those to turn on. Feature names are the
/// kernel's (at most 32 bytes, checked against a read first), so the nests stay far below
/// the 64 KiB an attribute's length allows.
pub(crate) fn features_set_request(family: u16, sequence: u32, index: u32, wanted: &BTreeMap<String, bool>) -> Vec<u8> {
    let bits = wanted
        .iter()
        .map(|(name, on)| {
            let mut bit = vec![Attr::Str(ETHTOOL_A_BITSET_BIT_NAME, name)];
            if *on {
                bit.push(Attr::Flag(ETHTOOL_A_BITSET_BIT_VALUE));
            }
            Attr::Nest(ETHTOOL_A_BITSET_BITS_BIT, bit)
        })
        .collect();
    genl_message(
        family,
        sequence,
        ETHTOOL_MSG_FEATURES_SET,
        ETHTOOL_GENL_VERSION,
        &[
            header(index),
            Attr::Nest(ETHTOOL_A_FEATURES_WANTED, vec![Attr::Nest(ETHTOOL_A_BITSET_BITS, bits)]),
        ],
    )
}

/// What came back for one request so far.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Answer {
    /// The reply's generic netlink payload (header and attributes).
    pub(crate) reply: Option<Vec<u8>>,
    /// The acknowledgement, once it came.
    pub(crate) ack: Option<Result<(), KernelError>>,
}

/// Reads the messages of one datagram answering request `sequence` into `answer`; messages of
/// other sequence numbers are skipped.
pub(crate) fn read_answer(datagram: &[u8], sequence: u32, answer: &mut Answer) -> Result<(), String> {
    let mut rest = datagram;
    while !rest.is_empty() {
        let message = NetlinkBuffer::new_checked(rest).map_err(|e| format!("bad netlink header: {e}"))?;
        let length = message.length() as usize;
        rest = rest.get(length.next_multiple_of(4)..).unwrap_or_default();
        if message.sequence_number() != sequence {
            continue;
        }
        match message.message_type() {
            NLMSG_ERROR => answer.ack = Some(crate::rtnl::parse_ack(&message)?.result),
            // Below `NLMSG_MIN_TYPE` are netlink's own (`NLMSG_NOOP`, `NLMSG_DONE`): no reply.
            kind if kind >= GENL_ID_CTRL => answer.reply = Some(message.payload().to_vec()),
            _ => {}
        }
    }
    Ok(())
}

/// The command and attributes of a generic netlink payload.
fn genl_payload(payload: &[u8]) -> Result<(u8, &[u8]), String> {
    let command = *payload.first().ok_or("no generic netlink header")?;
    let attributes = payload
        .get(GENL_HEADER_LEN..)
        .ok_or("truncated generic netlink header")?;
    Ok((command, attributes))
}

/// The attributes in `bytes`, failing on a malformed one.
fn attributes(bytes: &[u8]) -> impl Iterator<Item = Result<NlaBuffer<&[u8]>, String>> {
    NlasIterator::new(bytes).map(|nla| nla.map_err(|e| format!("bad attribute: {e}")))
}

/// The family id in the controller's answer.
pub(crate) fn parse_family_id(payload: &[u8]) -> Result<u16, String> {
    let (command, attrs) = genl_payload(payload)?;
    if command != CTRL_CMD_NEWFAMILY {
        return Err(format!("controller command {command} where a family was expected"));
    }
    for nla in attributes(attrs) {
        let nla = nla?;
        if nla.kind() == CTRL_ATTR_FAMILY_ID {
            let value = nla.value();
            return value
                .get(..2)
                .map(|b| u16::from_ne_bytes([b[0], b[1]]))
                .ok_or_else(|| "short family id".into());
        }
    }
    Err("no family id in the controller's answer".into())
}

/// A verbose bitset: each named bit listed, with its value (a list without a mask lists only
/// the bits that are set). Bits without a name are skipped.
fn parse_bitset(bytes: &[u8]) -> Result<BTreeMap<String, bool>, String> {
    let mut no_mask = false;
    let mut listed = Vec::new();
    for nla in attributes(bytes) {
        let nla = nla?;
        match nla.kind() {
            ETHTOOL_A_BITSET_NOMASK => no_mask = true,
            ETHTOOL_A_BITSET_BITS => {
                for bit in attributes(nla.value()) {
                    let bit = bit?;
                    if bit.kind() != ETHTOOL_A_BITSET_BITS_BIT {
                        continue;
                    }
                    let mut name = None;
                    let mut value = false;
                    for field in attributes(bit.value()) {
                        let field = field?;
                        match field.kind() {
                            ETHTOOL_A_BITSET_BIT_NAME => {
                                let text = field.value();
                                let end = text.iter().position(|b| *b == 0).unwrap_or(text.len());
                                name = Some(
                                    std::str::from_utf8(&text[..end])
                                        .map_err(|_| "a bit name that is not UTF-8")?
                                        .to_owned(),
                                );
                            }
                            ETHTOOL_A_BITSET_BIT_VALUE => value = true,
                            _ => {}
                        }
                    }
                    if let Some(name) = name {
                        listed.push((name, value));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(listed
        .into_iter()
        .map(|(name, value)| (name, no_mask || value))
        .collect())
}

/// The features of an `ETHTOOL_MSG_FEATURES_GET_REPLY`.
pub(crate) fn parse_features(payload: &[u8]) -> Result<BTreeMap<String, FeatureState>, String> {
    let (command, attrs) = genl_payload(payload)?;
    if command != ETHTOOL_MSG_FEATURES_GET_REPLY {
        return Err(format!("ethtool command {command} where the features were expected"));
    }
    let (mut hw, mut wanted, mut active, mut nochange) = (None, None, None, None);
    for nla in attributes(attrs) {
        let nla = nla?;
        let slot = match nla.kind() {
            ETHTOOL_A_FEATURES_HW => &mut hw,
            ETHTOOL_A_FEATURES_WANTED => &mut wanted,
            ETHTOOL_A_FEATURES_ACTIVE => &mut active,
            ETHTOOL_A_FEATURES_NOCHANGE => &mut nochange,
            _ => continue,
        };
        *slot = Some(parse_bitset(nla.value())?);
    }
    // `hw` carries a mask of every feature the kernel knows: the list of names.
    let hw = hw.ok_or("no hw bitset")?;
    let (wanted, active, nochange) = (
        wanted.ok_or("no wanted bitset")?,
        active.ok_or("no active bitset")?,
        nochange.unwrap_or_default(),
    );
    let on = |set: &BTreeMap<String, bool>, name: &str| set.get(name).copied().unwrap_or(false);
    Ok(hw
        .iter()
        .map(|(name, in_hw)| {
            (
                name.clone(),
                FeatureState {
                    active: on(&active, name),
                    wanted: on(&wanted, name),
                    changeable: *in_hw && !on(&nochange, name),
                },
            )
        })
        .collect())
}

/// An `ETHTOOL_MSG_FEATURES_SET_REPLY`: `WANTED` lists (with a mask) the features asked for
/// whose result differs from the request, with the value asked; `ACTIVE` lists those that
/// changed, with their new value.
pub(crate) fn parse_set_reply(payload: &[u8]) -> Result<SetReply, String> {
    let (command, attrs) = genl_payload(payload)?;
    if command != ETHTOOL_MSG_FEATURES_SET_REPLY {
        return Err(format!(
            "ethtool command {command} where the change's reply was expected"
        ));
    }
    let mut reply = SetReply::default();
    for nla in attributes(attrs) {
        let nla = nla?;
        match nla.kind() {
            ETHTOOL_A_FEATURES_WANTED => reply.unmet = parse_bitset(nla.value())?,
            ETHTOOL_A_FEATURES_ACTIVE => reply.changed = parse_bitset(nla.value())?,
            _ => {}
        }
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use nix::errno::Errno;

    use super::*;

    fn wanted(pairs: &[(&str, bool)]) -> BTreeMap<String, bool> {
        pairs.iter().map(|(n, v)| ((*n).to_owned(), *v)).collect()
    }

    // Golden bytes, written from the uapi headers (little-endian).
    #[cfg(target_endian = "little")]
    #[test]
    fn the_family_lookup_is_the_controllers_getfamily_by_name() {
        #[rustfmt::skip]
        let expected: [u8; 32] = [
            // nlmsghdr: length 32, GENL_ID_CTRL, NLM_F_REQUEST | NLM_F_ACK, sequence 1, port 0.
            32, 0, 0, 0, 0x10, 0, 0x05, 0, 1, 0, 0, 0, 0, 0, 0, 0,
            // genlmsghdr: CTRL_CMD_GETFAMILY, version 1.
            3, 1, 0, 0,
            // CTRL_ATTR_FAMILY_NAME "ethtool\0".
            12, 0, 2, 0, b'e', b't', b'h', b't', b'o', b'o', b'l', 0,
        ];
        assert_eq!(family_request(1), expected);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn a_features_read_names_the_interface_by_index_in_a_nested_header() {
        #[rustfmt::skip]
        let expected: [u8; 32] = [
            // nlmsghdr: length 32, family 0x1234, REQUEST | ACK, sequence 2.
            32, 0, 0, 0, 0x34, 0x12, 0x05, 0, 2, 0, 0, 0, 0, 0, 0, 0,
            // genlmsghdr: ETHTOOL_MSG_FEATURES_GET, ETHTOOL_GENL_VERSION.
            11, 1, 0, 0,
            // ETHTOOL_A_FEATURES_HEADER | NLA_F_NESTED { ETHTOOL_A_HEADER_DEV_INDEX 7 }.
            12, 0, 1, 0x80, 8, 0, 1, 0, 7, 0, 0, 0,
        ];
        assert_eq!(features_get_request(0x1234, 2, 7), expected);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn a_features_change_lists_only_the_named_features_with_a_mask() {
        let request = features_set_request(
            0x1234,
            3,
            7,
            &wanted(&[("tx-checksum-ip-generic", false), ("rx-gro-list", true)]),
        );
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            // nlmsghdr: length 96.
            &[96, 0, 0, 0, 0x34, 0x12, 0x05, 0, 3, 0, 0, 0, 0, 0, 0, 0][..],
            // genlmsghdr: ETHTOOL_MSG_FEATURES_SET, version 1.
            &[12, 1, 0, 0],
            // The header nest, as in the read.
            &[12, 0, 1, 0x80, 8, 0, 1, 0, 7, 0, 0, 0],
            // ETHTOOL_A_FEATURES_WANTED | NESTED, 64 bytes; no NOMASK, no SIZE.
            &[64, 0, 3, 0x80],
            // ETHTOOL_A_BITSET_BITS | NESTED, 60 bytes.
            &[60, 0, 3, 0x80],
            // ETHTOOL_A_BITSET_BITS_BIT | NESTED, 24 bytes: NAME "rx-gro-list\0", VALUE.
            &[24, 0, 1, 0x80, 16, 0, 2, 0],
            b"rx-gro-list\0",
            &[4, 0, 3, 0],
            // BIT, 32 bytes: NAME "tx-checksum-ip-generic\0" (length 27, padded to 28), no VALUE.
            &[32, 0, 1, 0x80, 27, 0, 2, 0],
            b"tx-checksum-ip-generic\0",
            &[0],
        ]
        .concat();
        assert_eq!(request, expected);
    }

    /// A verbose bitset as the kernel writes it: `mask` lists every bit with `VALUE` on those
    /// set; without it, only the set bits are listed under `NOMASK`.
    fn bitset(kind: u16, bits: &[(&str, bool)], mask: bool) -> Vec<u8> {
        let entries: Vec<Attr<'_>> = bits
            .iter()
            .filter(|(_, on)| mask || *on)
            .map(|(name, on)| {
                let mut bit = vec![Attr::U32(1, 0), Attr::Str(ETHTOOL_A_BITSET_BIT_NAME, name)];
                if mask && *on {
                    bit.push(Attr::Flag(ETHTOOL_A_BITSET_BIT_VALUE));
                }
                Attr::Nest(ETHTOOL_A_BITSET_BITS_BIT, bit)
            })
            .collect();
        let mut set = Vec::new();
        if !mask {
            set.push(Attr::Flag(ETHTOOL_A_BITSET_NOMASK));
        }
        set.push(Attr::U32(2, 64));
        set.push(Attr::Nest(ETHTOOL_A_BITSET_BITS, entries));
        let nest = Attr::Nest(kind, set);
        let mut bytes = vec![0; nest.buffer_len()];
        nest.emit(&mut bytes);
        bytes
    }

    fn payload(command: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
        [vec![command, 1, 0, 0], header_bytes(), attrs.concat()].concat()
    }

    fn header_bytes() -> Vec<u8> {
        let header = header(7);
        let mut bytes = vec![0; header.buffer_len()];
        header.emit(&mut bytes);
        bytes
    }

    #[test]
    fn a_features_reply_gives_each_feature_active_wanted_and_changeable() {
        let reply = payload(
            ETHTOOL_MSG_FEATURES_GET_REPLY,
            &[
                bitset(
                    ETHTOOL_A_FEATURES_HW,
                    &[("rx-gro-list", true), ("loopback", false), ("netns-local", true)],
                    true,
                ),
                bitset(ETHTOOL_A_FEATURES_WANTED, &[("rx-gro-list", true)], false),
                bitset(ETHTOOL_A_FEATURES_ACTIVE, &[("loopback", true)], false),
                bitset(ETHTOOL_A_FEATURES_NOCHANGE, &[("netns-local", true)], false),
            ],
        );
        let features = parse_features(&reply).expect("decodes");
        assert_eq!(
            features,
            BTreeMap::from([
                (
                    "loopback".to_owned(),
                    FeatureState {
                        active: true,
                        wanted: false,
                        changeable: false
                    }
                ),
                (
                    "netns-local".to_owned(),
                    FeatureState {
                        active: false,
                        wanted: false,
                        changeable: false
                    }
                ),
                (
                    "rx-gro-list".to_owned(),
                    FeatureState {
                        active: false,
                        wanted: true,
                        changeable: true
                    }
                ),
            ])
        );
        // A change is checked against such a read before it is sent.
        let err =
            check_changeable(7, &features, &wanted(&[("rx-gro-list", true), ("nope", true)])).expect_err("unknown");
        assert_eq!(err.to_string(), "interface 7: no ethtool feature named nope");
        let err = check_changeable(7, &features, &wanted(&[("loopback", false)])).expect_err("fixed");
        assert_eq!(
            err.to_string(),
            "interface 7: ethtool feature loopback cannot be changed on this device"
        );
        check_changeable(7, &features, &wanted(&[("rx-gro-list", false)])).expect("changeable");
    }

    #[test]
    fn a_change_reply_says_what_changed_and_what_the_kernel_left() {
        let reply = payload(
            ETHTOOL_MSG_FEATURES_SET_REPLY,
            &[
                bitset(ETHTOOL_A_FEATURES_WANTED, &[("rx-gro-list", true)], true),
                bitset(
                    ETHTOOL_A_FEATURES_ACTIVE,
                    &[("tx-checksum-ip-generic", false), ("tx-tcp-segmentation", false)],
                    true,
                ),
            ],
        );
        let reply = parse_set_reply(&reply).expect("decodes");
        assert_eq!(reply.unmet, wanted(&[("rx-gro-list", true)]));
        assert_eq!(
            reply.changed,
            wanted(&[("tx-checksum-ip-generic", false), ("tx-tcp-segmentation", false)])
        );
        let err = check_applied(
            7,
            &reply,
            &wanted(&[("rx-gro-list", true), ("tx-checksum-ip-generic", false)]),
        )
        .expect_err("left off");
        assert!(
            matches!(&err, EthtoolError::NotApplied { index: 7, feature, wanted: true } if feature == "rx-gro-list"),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "interface 7: asked for rx-gro-list on, the kernel left it off"
        );
        check_applied(7, &reply, &wanted(&[("tx-checksum-ip-generic", false)])).expect("applied");
    }

    #[test]
    fn the_family_id_is_read_from_the_controllers_answer() {
        let id = Attr::U32(CTRL_ATTR_FAMILY_ID, 0);
        let mut attr = vec![0; id.buffer_len()];
        id.emit(&mut attr);
        // A u16 in a 4-byte attribute slot: the value's first two bytes.
        attr[4..6].copy_from_slice(&0x15u16.to_ne_bytes());
        let answer = [vec![CTRL_CMD_NEWFAMILY, 2, 0, 0], attr].concat();
        assert_eq!(parse_family_id(&answer), Ok(0x15));
        assert!(parse_family_id(&[CTRL_CMD_NEWFAMILY, 2, 0, 0]).is_err());
    }

    #[test]
    fn an_answer_is_its_reply_then_its_ack() {
        let reply = [
            &28u32.to_ne_bytes()[..],
            &0x1234u16.to_ne_bytes(),
            &0u16.to_ne_bytes(),
            &5u32.to_ne_bytes(),
            &0u32.to_ne_bytes(),
            &[11, 1, 0, 0, 8, 0, 9, 0, 1, 2, 3, 4],
        ]
        .concat();
        let ack = [
            &36u32.to_ne_bytes()[..],
            &NLMSG_ERROR.to_ne_bytes(),
            &netlink_packet_core::NLM_F_CAPPED.to_ne_bytes(),
            &5u32.to_ne_bytes(),
            &0u32.to_ne_bytes(),
            &(-(Errno::ENODEV as i32)).to_ne_bytes(),
            &[0; 16],
        ]
        .concat();
        let other = [&ack[..8], &6u32.to_ne_bytes(), &ack[12..]].concat();
        let mut answer = Answer::default();
        read_answer(&[reply.clone(), other].concat(), 5, &mut answer).expect("decodes");
        assert_eq!(answer.reply.as_deref(), Some(&reply[16..]));
        assert_eq!(answer.ack, None);
        read_answer(&ack, 5, &mut answer).expect("decodes");
        assert_eq!(
            answer.ack,
            Some(Err(KernelError {
                errno: Errno::ENODEV,
                message: None
            }))
        );
    }

    proptest::proptest! {
        /// Any bytes decode to an answer, features, a change's reply or a family id, or to an
        /// error; never a panic.
        #[test]
        fn arbitrary_answers_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut answer = Answer::default();
            let _ = read_answer(&bytes, 1, &mut answer);
            let _ = parse_features(&bytes);
            let _ = parse_set_reply(&bytes);
            let _ = parse_family_id(&bytes);
            let _ = parse_bitset(&bytes);
        }

        /// Bytes that start as a features reply (so the attribute walk is reached) never panic
        /// either.
        #[test]
        fn arbitrary_attributes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_features(&[&[ETHTOOL_MSG_FEATURES_GET_REPLY, 1, 0, 0][..], &bytes].concat());
            let _ = parse_set_reply(&[&[ETHTOOL_MSG_FEATURES_SET_REPLY, 1, 0, 0][..], &bytes].concat());
        }
    }
}
