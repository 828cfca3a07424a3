//! Acting from inside a network namespace, for the privileged tests: code run on a thread that
//! entered it, UDP sockets made there, and a bounded round trip between two of them.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};

use crate::common::netns_path;

/// Runs `f` on a thread of its own that entered namespace `name` (the thread ends with it).
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    let file = std::fs::File::open(netns_path(name)).unwrap();
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                f()
            })
            .join()
            .unwrap()
    })
}

/// A UDP socket bound to `address` inside namespace `ns`: made on a thread that enters it (a
/// socket stays in the namespace it was made in).
pub fn udp_in(ns: &str, address: SocketAddrV4) -> UdpSocket {
    let path = netns_path(ns);
    std::thread::spawn(move || {
        let file = std::fs::File::open(path).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let socket = UdpSocket::bind(address).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        socket
    })
    .join()
    .unwrap()
}

/// A bounded UDP round trip from `a` to `b`: a datagram and its echo, retried while ARP
/// resolves; what `b` saw the datagram come from.
pub fn round_trip(a: &UdpSocket, b: &UdpSocket) -> SocketAddr {
    let to = b.local_addr().unwrap();
    let mut buffer = [0; 16];
    for _ in 0..3 {
        a.send_to(b"ping", to).unwrap();
        let Ok((n, from)) = b.recv_from(&mut buffer) else {
            continue;
        };
        assert_eq!(&buffer[..n], b"ping");
        b.send_to(b"pong", from).unwrap();
        let (n, _) = a.recv_from(&mut buffer).expect("the echo comes back");
        assert_eq!(&buffer[..n], b"pong");
        return from;
    }
    panic!("no datagram from {} reached {to}", a.local_addr().unwrap());
}
