//! The mode, owner and group of Unix link endpoints (`socket_mode`, `socket_owner`,
//! `socket_group`): whoever may connect to an endpoint may open links to a peer router as this
//! node, so the socket file's permissions are the endpoint's access control.
//!
//! `rlinkd run` binds the endpoints under a umask of 0177 ([`PrivateUmask`]), so each socket
//! file starts as mode 0600, then sets the group and owner and last the configured mode: at no
//! moment is a socket open to more users than its final mode allows.

use std::path::Path;

use crate::addr::LocalAddr;
use crate::config::{LinkConfig, SocketAccess};
use crate::ops::ids::{resolve as resolve_id, IdKind};

/// Applying an endpoint's access settings failed; `key` is the setting at fault
/// (`socket_owner`, `socket_group` or `socket_mode`).
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct AccessError {
    pub key: &'static str,
    pub message: String,
}

/// Owner and group ids, `None` to leave as bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ids {
    pub owner: Option<u32>,
    pub group: Option<u32>,
}

/// The owner and group ids `access` asks for, looked up on this host.
pub fn resolve(access: &SocketAccess) -> Result<Ids, AccessError> {
    let lookup = |key, kind, spec: &Option<crate::config::IdSpec>| match spec {
        Some(s) => resolve_id(kind, &s.0).map(Some).map_err(|e| AccessError {
            key,
            message: e.to_string(),
        }),
        None => Ok(None),
    };
    Ok(Ids {
        owner: lookup("socket_owner", IdKind::User, &access.owner)?,
        group: lookup("socket_group", IdKind::Group, &access.group)?,
    })
}

/// Gives the socket file at `path` the owner, group and mode of `access`.
pub fn apply(path: &Path, access: &SocketAccess) -> Result<(), AccessError> {
    let Ids { owner, group } = resolve(access)?;
    if owner.is_some() || group.is_some() {
        let key = if owner.is_some() {
            "socket_owner"
        } else {
            "socket_group"
        };
        // lchown: the path is the socket rlinkd just bound, never a link to follow.
        std::os::unix::fs::lchown(path, owner, group).map_err(|e| {
            let hint = if e.raw_os_error() == Some(libc::EPERM) {
                " (another owner needs root or CAP_CHOWN; a group needs rlinkd to be in it)"
            } else {
                ""
            };
            AccessError {
                key,
                message: format!("{}: chown: {e}{hint}", path.display()),
            }
        })?;
    }
    let mode = access.mode();
    chmod(path, mode).map_err(|e| AccessError {
        key: "socket_mode",
        message: format!("{}: chmod {mode:04o}: {e}", path.display()),
    })
}

fn chmod(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Applies [`apply`] to every Unix link endpoint; the error names `links[N].<key>`.
pub fn apply_all(links: &[LinkConfig]) -> Result<(), String> {
    for (i, l) in links.iter().enumerate() {
        if let LocalAddr::Unix(p) = &l.listen {
            apply(p, &l.socket).map_err(|e| format!("links[{i}].{e}"))?;
        }
    }
    Ok(())
}

/// Sets the process umask to 0177 until dropped, so sockets bound meanwhile start as mode 0600.
/// The umask is process-wide: hold it only while one thread binds.
pub struct PrivateUmask {
    previous: libc::mode_t,
}

impl PrivateUmask {
    pub fn set() -> PrivateUmask {
        // SAFETY: umask(2) only swaps the process's file mode creation mask; it cannot fail.
        let previous = unsafe { libc::umask(0o177) };
        PrivateUmask { previous }
    }
}

impl Drop for PrivateUmask {
    fn drop(&mut self) {
        // SAFETY: as in `set`; restores the mask found there.
        unsafe {
            libc::umask(self.previous);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{IdSpec, SocketMode};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn a_bound_socket_gets_the_mode_and_group_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.sock");
        let _l = {
            let _mask = PrivateUmask::set();
            std::os::unix::net::UnixListener::bind(&path).unwrap()
        };
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&path), 0o600, "bound under the private umask");

        // The process's own group: allowed without privileges.
        let gid = std::fs::metadata(dir.path()).unwrap().gid();
        let access = SocketAccess {
            mode: Some(SocketMode(0o640)),
            owner: None,
            group: Some(IdSpec(gid.to_string())),
        };
        apply(&path, &access).unwrap();
        assert_eq!(mode(&path), 0o640);
        assert_eq!(std::fs::metadata(&path).unwrap().gid(), gid);

        apply(&path, &SocketAccess::default()).unwrap();
        assert_eq!(mode(&path), 0o660, "the default mode");
    }

    #[test]
    fn unknown_names_name_the_key() {
        let access = SocketAccess {
            mode: None,
            owner: None,
            group: Some(IdSpec("no-such-group-rlinkd".into())),
        };
        let e = resolve(&access).unwrap_err();
        assert_eq!(e.key, "socket_group");
        assert!(e.message.contains("no-such-group-rlinkd"), "{e}");
    }
}
