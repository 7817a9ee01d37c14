//! Ring set-up and the one system call of a loop turn.
//!
//! Flags are tried from the best to none, because each is only a hint to the kernel about how
//! the ring is used and an older kernel answers EINVAL to one it does not know:
//! `SINGLE_ISSUER | DEFER_TASKRUN` (6.1: completions are produced only when this thread enters
//! the kernel to wait, so receives never interrupt it), then `COOP_TASKRUN` (5.19: no
//! interrupting IPI), then no flag. What the engine cannot do without is checked and refused
//! with the missing piece named: the opcodes (`IORING_REGISTER_PROBE`) and `IORING_FEAT_EXT_ARG`
//! (5.11), which lets one `io_uring_enter` wait with a timeout (the core's deadline) without a
//! timeout request of its own.

use std::io;
use std::time::Duration;

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{opcode, squeue, IoUring, Probe};

use super::UringError;
use crate::io::syscalls::{self, Syscall};

/// How completions reach this thread (the set-up flags the kernel accepted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskRun {
    /// `SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG`.
    Deferred,
    /// `COOP_TASKRUN | TASKRUN_FLAG`.
    Cooperative,
    /// No flag: the kernel's default.
    Default,
}

impl std::fmt::Display for TaskRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TaskRun::Deferred => "SINGLE_ISSUER+DEFER_TASKRUN",
            TaskRun::Cooperative => "COOP_TASKRUN",
            TaskRun::Default => "default",
        })
    }
}

/// Sets one combination of set-up flags on a ring builder.
type SetupFlags = fn(&mut io_uring::Builder);

/// The opcodes the engine cannot run without, by name.
const REQUIRED: &[(&str, u8)] = &[
    ("RECVMSG", opcode::RecvMsg::CODE),
    ("SENDMSG", opcode::SendMsg::CODE),
    ("POLL_ADD", opcode::PollAdd::CODE),
    ("ASYNC_CANCEL", opcode::AsyncCancel::CODE),
    // The links' local sockets.
    ("SEND", opcode::Send::CODE),
    ("RECV", opcode::Recv::CODE),
];

pub struct Ring {
    ring: IoUring,
    taskrun: TaskRun,
    /// `SENDMSG_ZC` is in the probe (6.1): zero-copy sends may be chosen.
    zero_copy: bool,
    /// `io_uring_enter` calls made through [`Ring::enter`] and [`Ring::push`].
    enters: u64,
}

impl Ring {
    /// A ring with `entries` submission entries and room for `cq_entries` completions (multishot
    /// receives can post many per turn), set up on the calling thread: with `SINGLE_ISSUER` only
    /// this thread may submit, which the shard's loop guarantees by being `!Send`.
    pub fn new(entries: u32, cq_entries: u32) -> Result<Ring, UringError> {
        let attempts: [(TaskRun, SetupFlags); 3] = [
            (TaskRun::Deferred, |b| {
                b.setup_single_issuer()
                    .setup_defer_taskrun()
                    .setup_taskrun_flag();
            }),
            (TaskRun::Cooperative, |b| {
                b.setup_coop_taskrun().setup_taskrun_flag();
            }),
            (TaskRun::Default, |_| {}),
        ];
        let mut last = None;
        for (taskrun, flags) in attempts {
            let mut b = IoUring::builder();
            b.setup_cqsize(cq_entries);
            flags(&mut b);
            match b.build(entries) {
                Ok(ring) => {
                    let mut ring = Ring {
                        ring,
                        taskrun,
                        zero_copy: false,
                        enters: 0,
                    };
                    ring.zero_copy = ring.check()?;
                    return Ok(ring);
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
                Err(e) => return Err(UringError::Setup(e)),
            }
        }
        Err(UringError::Setup(last.unwrap_or_else(|| {
            io::Error::other("no set-up flags accepted")
        })))
    }

    /// Refuses a ring without what the engine needs; says whether `SENDMSG_ZC` is there.
    fn check(&self) -> Result<bool, UringError> {
        if !self.ring.params().is_feature_ext_arg() {
            return Err(UringError::Missing(
                "IORING_FEAT_EXT_ARG (timed waits, 5.11)",
            ));
        }
        if !self.ring.params().is_feature_fast_poll() {
            return Err(UringError::Missing(
                "IORING_FEAT_FAST_POLL (poll-driven socket I/O, 5.7)",
            ));
        }
        let mut probe = Probe::new();
        self.ring
            .submitter()
            .register_probe(&mut probe)
            .map_err(UringError::Probe)?;
        for &(name, code) in REQUIRED {
            if !probe.is_supported(code) {
                return Err(UringError::Missing(name));
            }
        }
        Ok(probe.is_supported(opcode::SendMsgZc::CODE))
    }

    pub fn supports_zero_copy(&self) -> bool {
        self.zero_copy
    }

    pub fn taskrun(&self) -> TaskRun {
        self.taskrun
    }

    pub fn enters(&self) -> u64 {
        self.enters
    }

    /// The ring itself, for registrations.
    pub fn submitter(&self) -> io_uring::Submitter<'_> {
        self.ring.submitter()
    }

    /// Queues `sqe`; a full submission queue is submitted first (one more `io_uring_enter`) and
    /// the push retried, so a burst never fails for lack of room.
    ///
    /// # Safety
    /// Every pointer `sqe` carries must stay valid, unmoved and untouched (except as the
    /// operation allows) until its last completion is reaped.
    pub unsafe fn push(&mut self, sqe: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the caller's guarantee about `sqe`'s memory is exactly push's contract.
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                return Ok(());
            }
            self.enters += 1;
            syscalls::count(Syscall::IoUringEnter);
            match self.ring.submit() {
                Ok(_) => {}
                // The completion queue is full: reaping happens in the caller's turn; the
                // kernel keeps the overflow (FEAT_NODROP), so submit what fits and go on.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    return Err(io::Error::from_raw_os_error(libc::EBUSY));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Submits what is queued and waits until at least one completion is ready or `timeout`
    /// passes (`None`: no limit; zero: only runs the deferred work and returns). One
    /// `io_uring_enter`. Timeouts, interruptions and a full completion queue are not errors: the
    /// caller reaps what is there either way.
    pub fn enter(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.enters += 1;
        syscalls::count(Syscall::IoUringEnter);
        let r = match timeout {
            Some(t) => {
                let ts = Timespec::new().sec(t.as_secs()).nsec(t.subsec_nanos());
                let args = SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => self.ring.submitter().submit_and_wait(1),
        };
        match r {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The completions ready now, as (user_data, result, flags).
    pub fn completions(&mut self) -> impl Iterator<Item = (u64, i32, u32)> + '_ {
        self.ring
            .completion()
            .map(|c| (c.user_data(), c.result(), c.flags()))
    }
}
