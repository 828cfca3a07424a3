//! An interface's offload sizes and transmit queue length ([`LinkTuning`]), set with one
//! `RTM_SETLINK` by index and read back from `RTM_GETLINK`, in the calling thread's network
//! namespace.
//!
//! Rules:
//! - One message carries every field given (`IFLA_GSO_MAX_SIZE`, `IFLA_GRO_MAX_SIZE`,
//!   `IFLA_GSO_IPV4_MAX_SIZE`, `IFLA_GRO_IPV4_MAX_SIZE`, `IFLA_TXQLEN`); an absent field is
//!   not sent, so the kernel leaves it as it is, and no tuning sends no message. The header's
//!   flags and change mask are zero: the link's up/down state is not touched.
//! - The kernel checks the values and refuses the whole message (e.g. a GSO size above the
//!   device's `tso_max_size`: `EINVAL`, "too big gso_max_size"); its errno and extended-ack
//!   text are kept.
//! - [`link_tuning`] reads every field, so a caller can record what the host had and restore
//!   it with the same [`tune_link`].
//! - The device's limit on GSO sizes, `tso_max_size` (`IFLA_TSO_MAX_SIZE`, read only), comes
//!   from the same `RTM_GETLINK`: an attach checks the configured `gsoMaxSize` and
//!   `gsoIPv4MaxSize` against it on the host (`check_gso_sizes`), before anything moves,
//!   rather than meet the kernel's `EINVAL` in the pod. It travels with the device.

use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkExtentMask, LinkMessage},
};

use crate::config::LinkTuning;
use crate::rtnl::{Rtnl, RtnlError};

/// A link's tuning could not be read or set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TuningError {
    /// No interface of that index in the calling thread's namespace.
    #[error("link tuning of interface {index}: no such interface")]
    NoSuchInterface {
        /// The interface's index.
        index: u32,
    },
    /// A configured GSO size is above what the device can segment (`tso_max_size`): 65536 on
    /// a NIC without BIG TCP.
    #[error("link tuning of interface {index}: {field} {size} is above the device's tso_max_size {tso_max_size}")]
    AboveTsoMax {
        /// The interface's index.
        index: u32,
        /// The configuration's field: `gsoMaxSize` or `gsoIPv4MaxSize`.
        field: &'static str,
        /// The size configured.
        size: u32,
        /// The device's limit.
        tso_max_size: u32,
    },
    /// The socket failed, the kernel refused, or its answer did not decode.
    #[error("link tuning of interface {index}: {source}")]
    Rtnl {
        /// The interface's index.
        index: u32,
        /// What failed.
        #[source]
        source: RtnlError,
    },
}

/// The `RTM_SETLINK` for interface `index` carrying the fields of `tuning` that are given.
pub(crate) fn tuning_message(index: u32, tuning: &LinkTuning) -> RouteNetlinkMessage {
    let mut link = LinkMessage::default();
    link.header.index = index;
    let fields = [
        tuning.gso_max_size.map(LinkAttribute::GsoMaxSize),
        tuning.gro_max_size.map(LinkAttribute::GroMaxSize),
        tuning.gso_ipv4_max_size.map(LinkAttribute::GsoIpv4MaxSize),
        tuning.gro_ipv4_max_size.map(LinkAttribute::GroIpv4MaxSize),
        tuning.txqueuelen.map(LinkAttribute::TxQueueLen),
    ];
    link.attributes.extend(fields.into_iter().flatten());
    RouteNetlinkMessage::SetLink(link)
}

/// The tuning fields a link message (an `RTM_GETLINK` answer) reports; a field the kernel
/// did not send (an older kernel) stays `None`.
pub(crate) fn tuning_of(link: &LinkMessage) -> LinkTuning {
    let mut tuning = LinkTuning::default();
    for attribute in &link.attributes {
        match attribute {
            LinkAttribute::GsoMaxSize(v) => tuning.gso_max_size = Some(*v),
            LinkAttribute::GroMaxSize(v) => tuning.gro_max_size = Some(*v),
            LinkAttribute::GsoIpv4MaxSize(v) => tuning.gso_ipv4_max_size = Some(*v),
            LinkAttribute::GroIpv4MaxSize(v) => tuning.gro_ipv4_max_size = Some(*v),
            LinkAttribute::TxQueueLen(v) => tuning.txqueuelen = Some(*v),
            _ => {}
        }
    }
    tuning
}

/// The device's `tso_max_size` a link message reports; `None` from a kernel before 5.19.
pub(crate) fn tso_max_size_of(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|attribute| match attribute {
        LinkAttribute::TsoMaxSize(v) => Some(*v),
        _ => None,
    })
}

/// Refuses a GSO size of `wanted` above `tso_max_size`, the limit of interface `index`; the
/// first such field is the error. Without a known limit (an older kernel) nothing is refused.
pub(crate) fn check_gso_sizes(index: u32, wanted: &LinkTuning, tso_max_size: Option<u32>) -> Result<(), TuningError> {
    let Some(tso_max_size) = tso_max_size else {
        return Ok(());
    };
    let fields = [
        ("gsoMaxSize", wanted.gso_max_size),
        ("gsoIPv4MaxSize", wanted.gso_ipv4_max_size),
    ];
    match fields
        .into_iter()
        .find_map(|(field, size)| size.filter(|size| *size > tso_max_size).map(|size| (field, size)))
    {
        Some((field, size)) => Err(TuningError::AboveTsoMax {
            index,
            field,
            size,
            tso_max_size,
        }),
        None => Ok(()),
    }
}

/// Sets `tuning` on interface `index` through `rtnl`.
pub(crate) fn tune_with(rtnl: &mut Rtnl, index: u32, tuning: &LinkTuning) -> Result<(), TuningError> {
    if tuning.is_empty() {
        return Ok(());
    }
    crate::attach::single(rtnl.execute(vec![(tuning_message(index, tuning), 0)])).map_err(|source| {
        match source.errno() {
            Some(nix::errno::Errno::ENODEV) => TuningError::NoSuchInterface { index },
            _ => TuningError::Rtnl { index, source },
        }
    })
}

/// Reads interface `index`'s tuning through `rtnl`.
pub(crate) fn read_with(rtnl: &mut Rtnl, index: u32) -> Result<LinkTuning, TuningError> {
    read_with_limit(rtnl, index).map(|(tuning, _)| tuning)
}

/// Reads interface `index`'s tuning and its `tso_max_size` through `rtnl`, from one
/// `RTM_GETLINK`.
pub(crate) fn read_with_limit(rtnl: &mut Rtnl, index: u32) -> Result<(LinkTuning, Option<u32>), TuningError> {
    let mut request = LinkMessage::default();
    request.header.index = index;
    request
        .attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    match rtnl.get(RouteNetlinkMessage::GetLink(request)) {
        Ok(Some(RouteNetlinkMessage::NewLink(link))) => Ok((tuning_of(&link), tso_max_size_of(&link))),
        Ok(None) => Err(TuningError::NoSuchInterface { index }),
        Ok(Some(other)) => Err(TuningError::Rtnl {
            index,
            source: RtnlError::Decode(format!(
                "a link was asked for, the kernel sent {}",
                netlink_packet_core::NetlinkSerializable::message_type(&other)
            )),
        }),
        Err(source) => Err(TuningError::Rtnl { index, source }),
    }
}

/// Sets the given fields of `tuning` on interface `index` of the calling thread's namespace,
/// in one message.
pub fn tune_link(index: u32, tuning: &LinkTuning) -> Result<(), TuningError> {
    let mut rtnl = Rtnl::new().map_err(|source| TuningError::Rtnl { index, source })?;
    tune_with(&mut rtnl, index, tuning)
}

/// Interface `index`'s current tuning in the calling thread's namespace: every field the
/// kernel reports.
pub fn link_tuning(index: u32) -> Result<LinkTuning, TuningError> {
    let mut rtnl = Rtnl::new().map_err(|source| TuningError::Rtnl { index, source })?;
    read_with(&mut rtnl, index)
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage};

    use super::*;

    fn bytes(message: RouteNetlinkMessage) -> Vec<u8> {
        let mut message = NetlinkMessage::from(message);
        message.header.flags = NLM_F_REQUEST | NLM_F_ACK;
        message.header.sequence_number = 1;
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        bytes
    }

    // Golden bytes, written from linux/rtnetlink.h and if_link.h (little-endian).
    #[cfg(target_endian = "little")]
    #[test]
    fn every_field_given_goes_in_one_setlink_by_index() {
        let tuning = LinkTuning {
            gso_max_size: Some(185_000),
            gro_max_size: Some(185_000),
            gso_ipv4_max_size: Some(65_536),
            gro_ipv4_max_size: Some(65_536),
            txqueuelen: Some(5000),
        };
        #[rustfmt::skip]
        let expected: [u8; 72] = [
            // nlmsghdr: length 72, RTM_SETLINK (19), NLM_F_REQUEST | NLM_F_ACK, sequence 1.
            72, 0, 0, 0, 19, 0, 0x05, 0, 1, 0, 0, 0, 0, 0, 0, 0,
            // ifinfomsg: AF_UNSPEC, type 0, index 9, flags 0, change 0.
            0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            // IFLA_GSO_MAX_SIZE (41) 185000.
            8, 0, 41, 0, 0xa8, 0xd2, 0x02, 0x00,
            // IFLA_GRO_MAX_SIZE (58) 185000.
            8, 0, 58, 0, 0xa8, 0xd2, 0x02, 0x00,
            // IFLA_GSO_IPV4_MAX_SIZE (63) 65536.
            8, 0, 63, 0, 0x00, 0x00, 0x01, 0x00,
            // IFLA_GRO_IPV4_MAX_SIZE (64) 65536.
            8, 0, 64, 0, 0x00, 0x00, 0x01, 0x00,
            // IFLA_TXQLEN (13) 5000.
            8, 0, 13, 0, 0x88, 0x13, 0x00, 0x00,
        ];
        assert_eq!(bytes(tuning_message(9, &tuning)), expected);
    }

    #[test]
    fn absent_fields_stay_out_and_the_reader_takes_what_the_kernel_sent() {
        let RouteNetlinkMessage::SetLink(link) = tuning_message(
            3,
            &LinkTuning {
                txqueuelen: Some(100),
                ..Default::default()
            },
        ) else {
            panic!("a set-link message");
        };
        assert!(link.header.flags.is_empty() && link.header.change_mask.is_empty());
        assert_eq!(link.attributes, [LinkAttribute::TxQueueLen(100)]);

        let mut answer = LinkMessage::default();
        answer.attributes = vec![
            LinkAttribute::IfName("eth0".into()),
            LinkAttribute::TxQueueLen(1000),
            LinkAttribute::GsoMaxSize(65_536),
            LinkAttribute::GroMaxSize(65_536),
            LinkAttribute::TsoMaxSize(524_280),
            LinkAttribute::GsoIpv4MaxSize(65_536),
            LinkAttribute::GroIpv4MaxSize(65_536),
        ];
        let read = tuning_of(&answer);
        assert_eq!(
            read,
            LinkTuning {
                gso_max_size: Some(65_536),
                gro_max_size: Some(65_536),
                gso_ipv4_max_size: Some(65_536),
                gro_ipv4_max_size: Some(65_536),
                txqueuelen: Some(1000),
            }
        );
        // What was read restores as it was.
        let RouteNetlinkMessage::SetLink(restore) = tuning_message(3, &read) else {
            panic!("a set-link message");
        };
        assert_eq!(tuning_of(&restore), read);
        assert_eq!(tuning_of(&LinkMessage::default()), LinkTuning::default());
        assert_eq!(tso_max_size_of(&answer), Some(524_280));
        assert_eq!(tso_max_size_of(&LinkMessage::default()), None);
    }

    #[test]
    fn a_gso_size_above_the_devices_tso_max_size_is_refused_naming_the_field_and_the_limit() {
        let wanted = |gso: Option<u32>, gso_ipv4: Option<u32>| LinkTuning {
            gso_max_size: gso,
            gso_ipv4_max_size: gso_ipv4,
            // GRO sizes and the queue length have no device limit.
            gro_max_size: Some(524_280),
            gro_ipv4_max_size: Some(524_280),
            txqueuelen: Some(5000),
        };
        // The README's BIG TCP example on a NIC without BIG TCP.
        let error = check_gso_sizes(4, &wanted(Some(131_072), None), Some(65_536)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "link tuning of interface 4: gsoMaxSize 131072 is above the device's tso_max_size 65536"
        );
        let error = check_gso_sizes(4, &wanted(Some(65_536), Some(65_537)), Some(65_536)).unwrap_err();
        assert!(
            matches!(
                error,
                TuningError::AboveTsoMax {
                    field: "gsoIPv4MaxSize",
                    size: 65_537,
                    tso_max_size: 65_536,
                    ..
                }
            ),
            "{error}"
        );
        // At the limit, below it, none given, or no limit known: fine.
        for (gso, gso_ipv4, limit) in [
            (Some(65_536), Some(65_536), Some(65_536)),
            (Some(1), None, Some(65_536)),
            (None, None, Some(1)),
            (Some(524_280), Some(524_280), None),
        ] {
            assert!(
                check_gso_sizes(4, &wanted(gso, gso_ipv4), limit).is_ok(),
                "{gso:?} {gso_ipv4:?} {limit:?}"
            );
        }
    }
}
