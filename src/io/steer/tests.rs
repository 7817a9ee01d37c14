use proptest::prelude::*;

use super::*;
use crate::quic::cid::{dcid_shard_byte, ShardCid, MAX_SHARDS};

/// Runs a classic BPF program over `packet` as the kernel does for a reuseport group: only the
/// instructions the steering program uses; a load past the end ends the program with 0.
fn run(program: &[libc::sock_filter], packet: &[u8]) -> u32 {
    use libc::{
        BPF_A, BPF_ABS, BPF_ALU, BPF_B, BPF_JA, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_JSET, BPF_K, BPF_LD,
        BPF_LEN, BPF_MISC, BPF_MOD, BPF_RET, BPF_TAX, BPF_TXA, BPF_W,
    };
    let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
    loop {
        let i = program[pc];
        pc += 1;
        let code = u32::from(i.code);
        match code {
            c if c == BPF_LD | BPF_W | BPF_LEN => a = packet.len() as u32,
            c if c == BPF_LD | BPF_B | BPF_ABS => match packet.get(i.k as usize) {
                Some(&b) => a = u32::from(b),
                None => return 0,
            },
            c if c == BPF_MISC | BPF_TAX => x = a,
            c if c == BPF_MISC | BPF_TXA => a = x,
            c if c == BPF_ALU | BPF_MOD | BPF_K => a %= i.k,
            c if c == BPF_JMP | BPF_JA => pc += i.k as usize,
            c if c & 0x07 == BPF_JMP => {
                let taken = match code & 0xf0 {
                    op if op == BPF_JGE => a >= i.k,
                    op if op == BPF_JEQ => a == i.k,
                    op if op == BPF_JSET => a & i.k != 0,
                    _ => panic!("unexpected jump {code:#x}"),
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            c if c == BPF_RET | BPF_A => return a,
            c if c == BPF_RET | BPF_K => return i.k,
            _ => panic!("unexpected instruction {code:#x}"),
        }
    }
}

fn expected(packet: &[u8], shards: usize) -> u32 {
    dcid_shard_byte(packet).map_or(NO_OWNER, |b| u32::from(b) % shards as u32)
}

#[test]
fn program_picks_the_owner_for_every_shard_byte() {
    for n in [1, 2, 3, 4, 64, 256] {
        let p = SteeringProgram::new(ShardCount::new(n).unwrap());
        for shard in 0..=255u8 {
            let cid = ShardCid::random(shard);
            let mut short = vec![0x43];
            short.extend_from_slice(cid.as_bytes());
            let mut long = vec![0xc3, 0, 0, 0, 1, 20];
            long.extend_from_slice(cid.as_bytes());
            long.push(0);
            for d in [short, long] {
                assert_eq!(run(p.instructions(), &d), u32::from(shard) % n as u32);
            }
        }
    }
}

#[test]
fn runts_get_no_owner_instead_of_socket_zero() {
    let p = SteeringProgram::new(ShardCount::new(4).unwrap());
    for d in [
        &[][..],
        &[0x40],
        &[0xc0, 0, 0, 0, 1],
        &[0xc0, 0, 0, 0, 1, 20],
        &[0xc0, 0, 0, 0, 1, 0, 3, 3],
    ] {
        assert_eq!(run(p.instructions(), d), NO_OWNER, "{d:02x?}");
    }
}

#[test]
fn jumps_stay_inside_the_program_and_end_in_a_return() {
    let p = SteeringProgram::new(ShardCount::new(8).unwrap());
    let code = p.instructions();
    assert!(code.len() <= libc::BPF_MAXINSNS as usize);
    let last = code.last().unwrap();
    assert_eq!(u32::from(last.code) & 0x07, libc::BPF_RET);
    for (pc, i) in code.iter().enumerate() {
        if u32::from(i.code) & 0x07 == libc::BPF_JMP {
            let far = if u32::from(i.code) == libc::BPF_JMP | libc::BPF_JA {
                i.k as usize
            } else {
                usize::from(i.jt.max(i.jf))
            };
            assert!(pc + 1 + far < code.len(), "jump at {pc} leaves the program");
        }
    }
}

proptest! {
    /// The kernel's rule and user space's rule agree on any bytes: a datagram the kernel steers
    /// to shard s is one the user-space reader says belongs to s.
    #[test]
    fn program_and_user_space_agree(
        d in proptest::collection::vec(any::<u8>(), 0..48),
        n in 1usize..=MAX_SHARDS,
    ) {
        let p = SteeringProgram::new(ShardCount::new(n).unwrap());
        prop_assert_eq!(run(p.instructions(), &d), expected(&d, n));
    }
}
