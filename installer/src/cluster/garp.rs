//! Gratuitous ARP: one broadcast ARP request for the VIP from the holder's MAC, so switches
//! and neighbours update their caches at once instead of after their entries time out (what
//! keepalived and kube-vip send). A raw `AF_PACKET` socket, so no `arping` on the node.

use std::io;
use std::net::Ipv4Addr;

const ETH_P_ARP: u16 = 0x0806;

/// Sends three gratuitous ARP requests for `ip` on `interface`.
pub fn announce(interface: &str, ip: Ipv4Addr) -> io::Result<()> {
    let mac = mac_of(interface)?;
    let name = std::ffi::CString::new(interface).map_err(io::Error::other)?;
    // SAFETY: if_nametoindex reads a NUL-terminated string we own.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut frame = [0u8; 42];
    frame[0..6].copy_from_slice(&[0xff; 6]);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    frame[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    frame[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    frame[18] = 6;
    frame[19] = 4;
    frame[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    frame[22..28].copy_from_slice(&mac);
    frame[28..32].copy_from_slice(&ip.octets());
    // target hardware address stays zero; target protocol address is the VIP itself
    frame[38..42].copy_from_slice(&ip.octets());
    // SAFETY: a raw packet socket, closed below; sendto reads `frame` and `addr`, both ours
    // and sized as passed.
    unsafe {
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            (ETH_P_ARP).to_be() as libc::c_int,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ARP.to_be();
        addr.sll_ifindex = index as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        let mut result = Ok(());
        for _ in 0..3 {
            let sent = libc::sendto(
                fd,
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            if sent < 0 {
                result = Err(io::Error::last_os_error());
                break;
            }
        }
        libc::close(fd);
        result
    }
}

fn mac_of(interface: &str) -> io::Result<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{interface}/address"))?;
    let bytes: Vec<u8> = text
        .trim()
        .split(':')
        .filter_map(|h| u8::from_str_radix(h, 16).ok())
        .collect();
    bytes
        .try_into()
        .map_err(|_| io::Error::other(format!("{interface} has no Ethernet address")))
}
