//! User and group names to ids, for the owner and group of link endpoint sockets
//! (`socket_owner`, `socket_group`), through the C library's `getpwnam_r` / `getgrnam_r` so
//! that NSS (LDAP, systemd's dynamic users) is honoured as `chown(1)` honours it.

use std::ffi::CString;
use std::io;

/// Which database a name is looked up in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdKind {
    User,
    Group,
}

impl IdKind {
    fn noun(self) -> &'static str {
        match self {
            IdKind::User => "user",
            IdKind::Group => "group",
        }
    }
}

/// The id of user or group `name`. A name made of digits only is taken as the id itself, as
/// `chown` does.
pub fn resolve(kind: IdKind, name: &str) -> io::Result<u32> {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
        return name.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} id {name} is too large", kind.noun()),
            )
        });
    }
    let c = CString::new(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} name {name:?} contains a NUL byte", kind.noun()),
        )
    })?;
    let found = match kind {
        IdKind::User => lookup_user(&c)?,
        IdKind::Group => lookup_group(&c)?,
    };
    found.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no {} named {name:?} on this host", kind.noun()),
        )
    })
}

/// Calls a `get*nam_r` function with a buffer that grows on ERANGE (large groups, NSS entries).
fn with_buffer(mut call: impl FnMut(&mut [libc::c_char]) -> libc::c_int) -> io::Result<()> {
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        match call(&mut buf) {
            0 => return Ok(()),
            libc::ERANGE if buf.len() < (1 << 20) => buf.resize(buf.len() * 2, 0),
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

fn lookup_user(name: &CString) -> io::Result<Option<u32>> {
    // SAFETY: passwd is plain data (integers and pointers), valid when zeroed.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    with_buffer(|buf| {
        // SAFETY: every pointer is to a live local or to `buf` with its exact length;
        // getpwnam_r writes the entry's strings into `buf` and sets `result` to `&pwd` or null.
        unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        }
    })?;
    Ok((!result.is_null()).then_some(pwd.pw_uid))
}

fn lookup_group(name: &CString) -> io::Result<Option<u32>> {
    // SAFETY: group is plain data (integers and pointers), valid when zeroed.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    with_buffer(|buf| {
        // SAFETY: as in lookup_user, for getgrnam_r.
        unsafe {
            libc::getgrnam_r(
                name.as_ptr(),
                &mut grp,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        }
    })?;
    Ok((!result.is_null()).then_some(grp.gr_gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_by_name_and_numbers_are_ids() {
        assert_eq!(resolve(IdKind::User, "root").unwrap(), 0);
        assert_eq!(resolve(IdKind::Group, "root").unwrap(), 0);
        assert_eq!(resolve(IdKind::User, "4242").unwrap(), 4242);
        assert_eq!(resolve(IdKind::Group, "0").unwrap(), 0);
    }

    #[test]
    fn unknown_names_are_errors_that_name_them() {
        let e = resolve(IdKind::Group, "no-such-group-rlinkd").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("no-such-group-rlinkd"), "{e}");
        assert!(resolve(IdKind::User, "99999999999").is_err());
    }
}
