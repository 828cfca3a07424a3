//! Notifications that the namespace's links, addresses or routes changed, from the routing
//!
//! The rest of this documentation is on the public item it governs, below, where users read it.

use netlink_sys::{AsyncSocket, AsyncSocketExt, TokioSocket, protocols::NETLINK_ROUTE};

use crate::netlink::{NetlinkError, RECEIVE_BUFFER};

// Routing netlink multicast groups (linux/rtnetlink.h, `enum rtnetlink_groups`): kernel ABI,
// not exported by netlink-packet-route.
const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_IFADDR: u32 = 9;
const RTNLGRP_IPV6_ROUTE: u32 = 11;

/// The groups subscribed to: link, address and route changes of both families.
pub const GROUPS: [u32; 5] = [
    RTNLGRP_LINK,
    RTNLGRP_IPV4_IFADDR,
    RTNLGRP_IPV6_IFADDR,
    RTNLGRP_IPV4_ROUTE,
    RTNLGRP_IPV6_ROUTE,
];

/// A subscription to the link, address and route change notifications of the namespace it was
/// made in.
///
/// Notifications that the namespace's links, addresses or routes changed, from the routing
/// netlink's multicast groups, as a plain "something changed": the reader rescans what it
/// needs instead of patching a copy of the kernel's tables, so the messages are not parsed.
///
/// The rules:
/// - One `netlink-sys` socket, joined to the link, IPv4/IPv6 address and IPv4/IPv6 route groups
///   (`RTNLGRP_*`, kernel ABI); it is never sent to, so every datagram on it is a notification.
/// - It is read without blocking through the tokio reactor (`netlink-sys`'s tokio socket), so
///   it needs no thread of its own; dropping [`Changes`] closes the socket.
/// - A read error ends the notifications: an overflowed socket (`ENOBUFS`) has lost some, and
///   the caller subscribes again and rescans rather than trusting the rest.
pub struct Changes {
    socket: TokioSocket,
    buffer: Vec<u8>,
}

impl std::fmt::Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changes").finish_non_exhaustive()
    }
}

impl Changes {
    /// Subscribes in the calling thread's network namespace. Must be called within a tokio
    /// runtime (the socket is registered with its reactor).
    pub fn subscribe() -> Result<Self, NetlinkError> {
        let mut socket = TokioSocket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
        socket.socket_mut().bind_auto().map_err(NetlinkError::Socket)?;
        for group in GROUPS {
            socket
                .socket_ref()
                .add_membership(group)
                .map_err(NetlinkError::Socket)?;
        }
        Ok(Self {
            socket,
            buffer: Vec::with_capacity(RECEIVE_BUFFER),
        })
    }

    /// Waits for the next datagram of notifications (one or more changes). An error ends the
    /// subscription: notifications may have been lost, subscribe again and rescan.
    pub async fn next(&mut self) -> Result<(), NetlinkError> {
        // The content is not read, so a datagram longer than the buffer may be cut.
        self.buffer.clear();
        self.socket.recv(&mut self.buffer).await.map_err(NetlinkError::Socket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_groups_are_the_kernels_link_address_and_route_groups() {
        // linux/rtnetlink.h: RTNLGRP_LINK = 1, RTNLGRP_IPV4_IFADDR = 5, RTNLGRP_IPV4_ROUTE = 7,
        // RTNLGRP_IPV6_IFADDR = 9, RTNLGRP_IPV6_ROUTE = 11.
        assert_eq!(GROUPS, [1, 5, 9, 7, 11]);
    }
}
