//! Handing record protection of a connected TCP socket to the kernel (`linux/tls.h`).
//!
//! `setsockopt(SOL_TCP, TCP_ULP, "tls")` attaches the TLS upper-layer protocol, then
//! `setsockopt(SOL_TLS, TLS_TX | TLS_RX, &tls12_crypto_info_*)` gives it the keys (the structs
//! are named `tls12_` for history; `version = TLS_1_3_VERSION` selects TLS 1.3 records). The
//! constants and structs are libc's transcription of the uapi header.
//!
//! Afterwards plain `read`/`write` on the socket carry application data. A record of another
//! type (alert, or a post-handshake message such as KeyUpdate or NewSessionTicket) is delivered
//! only to `recvmsg` with a control buffer, as a `SOL_TLS`/`TLS_GET_RECORD_TYPE` cmsg; a plain
//! `read` fails with `EIO` on it. The benchmark sends nothing but application data and
//! disables tickets (see [`super::prepare_context`]); neither side sends KeyUpdate.

use std::io::{self, Read, Write};
use std::mem;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use super::schedule::{Suite, TrafficKeys};
use super::{KtlsError, KtlsKeys};

/// Attaches kTLS to `fd` (a connected TCP socket) and installs both directions.
///
/// Call it right after the handshake, before any application record is sent or received in user
/// space, with keys from [`KtlsKeys::from_ssl`]. On [`KtlsError::is_recoverable`] errors the
/// socket still works for user-space TLS; on others the connection must be dropped.
pub fn install(fd: RawFd, keys: &KtlsKeys) -> Result<(), KtlsError> {
    attach_ulp(fd)?;
    // With the ULP attached but no keys, the socket passes bytes through unchanged, so a failure
    // here still leaves user-space TLS working. After TX is in, it no longer does.
    set_keys(fd, libc::TLS_TX, &keys.tx).map_err(KtlsError::Tx)?;
    set_keys(fd, libc::TLS_RX, &keys.rx).map_err(KtlsError::RxAfterTx)?;
    Ok(())
}

fn attach_ulp(fd: RawFd) -> Result<(), KtlsError> {
    setsockopt(fd, libc::SOL_TCP, libc::TCP_ULP, b"tls").map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => KtlsError::NotInKernel,
        _ => KtlsError::Ulp(e),
    })
}

fn set_keys(fd: RawFd, direction: libc::c_int, k: &TrafficKeys) -> io::Result<()> {
    let bad_len = || io::Error::from(io::ErrorKind::InvalidInput);
    let rec_seq = k.seq.to_be_bytes();
    let (salt, explicit) = k.iv.split_at(4);
    match k.suite {
        Suite::Aes128GcmSha256 => {
            let info = libc::tls12_crypto_info_aes_gcm_128 {
                info: libc::tls_crypto_info {
                    version: libc::TLS_1_3_VERSION,
                    cipher_type: libc::TLS_CIPHER_AES_GCM_128,
                },
                iv: explicit.try_into().map_err(|_| bad_len())?,
                key: k.key.as_slice().try_into().map_err(|_| bad_len())?,
                salt: salt.try_into().map_err(|_| bad_len())?,
                rec_seq,
            };
            setsockopt(fd, libc::SOL_TLS, direction, &info)
        }
        Suite::Aes256GcmSha384 => {
            let info = libc::tls12_crypto_info_aes_gcm_256 {
                info: libc::tls_crypto_info {
                    version: libc::TLS_1_3_VERSION,
                    cipher_type: libc::TLS_CIPHER_AES_GCM_256,
                },
                iv: explicit.try_into().map_err(|_| bad_len())?,
                key: k.key.as_slice().try_into().map_err(|_| bad_len())?,
                salt: salt.try_into().map_err(|_| bad_len())?,
                rec_seq,
            };
            setsockopt(fd, libc::SOL_TLS, direction, &info)
        }
        Suite::Chacha20Poly1305Sha256 => {
            // No salt: the whole 12-byte IV goes in `iv`.
            let info = libc::tls12_crypto_info_chacha20_poly1305 {
                info: libc::tls_crypto_info {
                    version: libc::TLS_1_3_VERSION,
                    cipher_type: libc::TLS_CIPHER_CHACHA20_POLY1305,
                },
                iv: k.iv,
                key: k.key.as_slice().try_into().map_err(|_| bad_len())?,
                salt: [],
                rec_seq,
            };
            setsockopt(fd, libc::SOL_TLS, direction, &info)
        }
    }
}

/// `setsockopt` with an option value the kernel reads as bytes. Only called with byte arrays and
/// libc's `linux/tls.h` structs, which are made of `u16`s and byte arrays and have no padding.
fn setsockopt<T: Copy>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` is a live, initialized `T` for the whole call and the length passed is
    // exactly its size; the kernel copies that many bytes in and keeps no pointer. `fd` is an
    // integer: a stale or foreign fd fails with EBADF/ENOTSOCK/EOPNOTSUPP, not memory unsafety.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast::<libc::c_void>(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The check behind [`super::ktls_available`]: installs fixed keys on both ends of a loopback
/// TCP pair (one side's TX keys are the other's RX keys) and sends a record each way. This
/// proves TLS 1.3 TX and RX with AES-128-GCM, not only that the ULP module loads.
pub(super) fn probe() -> Result<(), KtlsError> {
    let keys = |a: u8, b: u8| KtlsKeys {
        tx: TrafficKeys {
            suite: Suite::Aes128GcmSha256,
            key: vec![a; 16],
            iv: [a; 12],
            seq: 0,
        },
        rx: TrafficKeys {
            suite: Suite::Aes128GcmSha256,
            key: vec![b; 16],
            iv: [b; 12],
            seq: 0,
        },
    };
    let io = KtlsError::Probe;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io)?;
    let mut client = TcpStream::connect(listener.local_addr().map_err(io)?).map_err(io)?;
    let (mut server, _) = listener.accept().map_err(io)?;
    for s in [&client, &server] {
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(io)?;
    }
    install(client.as_raw_fd(), &keys(0x11, 0x22))?;
    install(server.as_raw_fd(), &keys(0x22, 0x11))?;
    round_trip(&mut client, &mut server, b"rlinkd ktls probe").map_err(io)?;
    round_trip(&mut server, &mut client, b"and back").map_err(io)?;
    Ok(())
}

/// Writes `msg` on `a` and checks it arrives whole on `b`.
pub(super) fn round_trip(a: &mut TcpStream, b: &mut TcpStream, msg: &[u8]) -> io::Result<()> {
    a.write_all(msg)?;
    let mut got = vec![0u8; msg.len()];
    b.read_exact(&mut got)?;
    if got == msg {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "kTLS round trip delivered different bytes",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crypto_info_layouts_match_the_uapi_header() {
        // struct tls_crypto_info { __u16 version; __u16 cipher_type; } followed by
        // iv, key, salt, rec_seq (linux/tls.h): 4 + 8 + 16 + 4 + 8, 4 + 8 + 32 + 4 + 8,
        // 4 + 12 + 32 + 0 + 8.
        assert_eq!(mem::size_of::<libc::tls12_crypto_info_aes_gcm_128>(), 40);
        assert_eq!(mem::size_of::<libc::tls12_crypto_info_aes_gcm_256>(), 56);
        assert_eq!(
            mem::size_of::<libc::tls12_crypto_info_chacha20_poly1305>(),
            56
        );
        assert_eq!(libc::TLS_1_3_VERSION, 0x0304);
        assert_eq!(
            (
                libc::TLS_CIPHER_AES_GCM_128,
                libc::TLS_CIPHER_AES_GCM_256,
                libc::TLS_CIPHER_CHACHA20_POLY1305
            ),
            (51, 52, 54)
        );
        assert_eq!(
            (libc::SOL_TLS, libc::TLS_TX, libc::TLS_RX, libc::TCP_ULP),
            (282, 1, 2, 31)
        );
    }

    #[test]
    fn install_on_a_non_socket_fails_cleanly() {
        let k = TrafficKeys {
            suite: Suite::Aes128GcmSha256,
            key: vec![0; 16],
            iv: [0; 12],
            seq: 0,
        };
        let keys = KtlsKeys {
            tx: k.clone(),
            rx: k,
        };
        let f = std::fs::File::open("/dev/null").unwrap();
        let e = install(f.as_raw_fd(), &keys).unwrap_err();
        assert!(matches!(e, KtlsError::Ulp(_)), "{e:?}");
        assert!(e.is_recoverable());
    }

    #[test]
    fn probe_either_round_trips_or_says_not_in_kernel() {
        match probe() {
            Ok(()) => {}
            Err(KtlsError::NotInKernel) => {
                eprintln!("kTLS not in this kernel (CONFIG_TLS unset): install path not exercised")
            }
            Err(e) => panic!("kTLS probe failed without a clear reason: {e}"),
        }
    }
}
