//! WASI preview 1 as an optional grant (`wasi = true` in a manifest): what a module built for
//! `wasm32-wasip1`, most toolchains' default target, needs to load and run, and nothing that
//! reaches outside the sandbox.
//!
//! Granted: the clocks, random bytes, stdout and stderr (each write goes to the worker's log,
//! tagged with the plugin), an empty stdin, empty arguments and environment, and `proc_exit`
//! (the request fails with the exit code). There are no preopened directories and no sockets, so
//! every other preview-1 function finds no file descriptor and answers `EBADF`, as it would for
//! a process with nothing open.
//!
//! Written here rather than taken from `wasmtime-wasi`: that crate's preview-1 layer requires
//! wasmtime's component-model and async features and a full virtual file system and network
//! stack, all to be switched off again for this grant; the dozen functions below are the whole
//! of what remains.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wasmtime::{bail, Caller, Extern, Linker, Module, Val, ValType};

use super::store::StoreData;

/// The import module of WASI preview 1.
pub const WASI_MODULE: &str = "wasi_snapshot_preview1";

/// Every function of WASI preview 1 (`wasi_snapshot_preview1`).
const PREVIEW1: [&str; 46] = [
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_advise",
    "fd_allocate",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_pwrite",
    "fd_read",
    "fd_readdir",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "poll_oneoff",
    "proc_exit",
    "proc_raise",
    "sched_yield",
    "random_get",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

// Error numbers of WASI preview 1.
const SUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOTSUP: i32 = 58;
const ESPIPE: i32 = 70;

/// The functions defined with a behaviour of their own; every other one answers `EBADF`.
const GRANTED: [&str; 16] = [
    "args_sizes_get",
    "environ_sizes_get",
    "args_get",
    "environ_get",
    "clock_res_get",
    "clock_time_get",
    "random_get",
    "fd_write",
    "fd_read",
    "fd_fdstat_get",
    "fd_close",
    "fd_seek",
    "sched_yield",
    "poll_oneoff",
    "proc_raise",
    "proc_exit",
];

/// Whether `name` is a WASI preview-1 function.
pub fn is_preview1(name: &str) -> bool {
    PREVIEW1.contains(&name)
}

/// Why a request stopped at `proc_exit`.
#[derive(Debug)]
pub(crate) struct Exited(pub(crate) i32);

impl std::fmt::Display for Exited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the module called proc_exit({})", self.0)
    }
}

impl std::error::Error for Exited {}

/// Defines, in `linker`, every WASI function `module` imports: the granted ones as described
/// above, the rest answering `EBADF` with the import's own signature.
pub(crate) fn add_to_linker(
    linker: &mut Linker<StoreData>,
    module: &Module,
) -> wasmtime::Result<()> {
    linker.func_wrap(WASI_MODULE, "args_sizes_get", sizes_zero)?;
    linker.func_wrap(WASI_MODULE, "environ_sizes_get", sizes_zero)?;
    linker.func_wrap(WASI_MODULE, "args_get", |_: i32, _: i32| SUCCESS)?;
    linker.func_wrap(WASI_MODULE, "environ_get", |_: i32, _: i32| SUCCESS)?;
    linker.func_wrap(WASI_MODULE, "clock_res_get", clock_res_get)?;
    linker.func_wrap(WASI_MODULE, "clock_time_get", clock_time_get)?;
    linker.func_wrap(WASI_MODULE, "random_get", random_get)?;
    linker.func_wrap(WASI_MODULE, "fd_write", fd_write)?;
    linker.func_wrap(WASI_MODULE, "fd_read", fd_read)?;
    linker.func_wrap(WASI_MODULE, "fd_fdstat_get", fd_fdstat_get)?;
    linker.func_wrap(WASI_MODULE, "fd_close", |fd: i32| std_fd(fd, SUCCESS))?;
    linker.func_wrap(WASI_MODULE, "fd_seek", |fd: i32, _: i64, _: i32, _: i32| {
        std_fd(fd, ESPIPE)
    })?;
    linker.func_wrap(WASI_MODULE, "sched_yield", || SUCCESS)?;
    linker.func_wrap(
        WASI_MODULE,
        "poll_oneoff",
        |_: i32, _: i32, _: i32, _: i32| ENOTSUP,
    )?;
    linker.func_wrap(WASI_MODULE, "proc_raise", |_: i32| ENOTSUP)?;
    linker.func_wrap(
        WASI_MODULE,
        "proc_exit",
        |code: i32| -> wasmtime::Result<()> { Err(Exited(code).into()) },
    )?;
    for import in module.imports() {
        if import.module() != WASI_MODULE || GRANTED.contains(&import.name()) {
            continue;
        }
        let wasmtime::ExternType::Func(ty) = import.ty() else {
            bail!("imports {WASI_MODULE}::{} as a non-function", import.name());
        };
        if !ty
            .results()
            .map(|r| r.to_string())
            .eq([ValType::I32.to_string()])
        {
            bail!(
                "imports {WASI_MODULE}::{} with the wrong signature ({ty:?})",
                import.name()
            );
        }
        linker.func_new(WASI_MODULE, import.name(), ty, |_, _, results| {
            results[0] = Val::I32(EBADF);
            Ok(())
        })?;
    }
    Ok(())
}

/// Descriptors 0, 1 and 2 exist; no other does.
fn std_fd(fd: i32, then: i32) -> i32 {
    if (0..=2).contains(&fd) {
        then
    } else {
        EBADF
    }
}

fn memory(caller: &mut Caller<'_, StoreData>) -> Option<wasmtime::Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Some(m),
        _ => None,
    }
}

/// Writes `bytes` at `ptr`; `false` when that is outside guest memory.
fn put(caller: &mut Caller<'_, StoreData>, ptr: i32, bytes: &[u8]) -> bool {
    memory(caller).is_some_and(|m| m.write(&mut *caller, ptr as u32 as usize, bytes).is_ok())
}

fn sizes_zero(mut caller: Caller<'_, StoreData>, count: i32, size: i32) -> i32 {
    if put(&mut caller, count, &0u32.to_le_bytes()) && put(&mut caller, size, &0u32.to_le_bytes()) {
        SUCCESS
    } else {
        EFAULT
    }
}

fn clock_res_get(mut caller: Caller<'_, StoreData>, id: i32, res: i32) -> i32 {
    if !(0..=3).contains(&id) {
        return EINVAL;
    }
    if put(&mut caller, res, &1_000u64.to_le_bytes()) {
        SUCCESS
    } else {
        EFAULT
    }
}

fn clock_time_get(mut caller: Caller<'_, StoreData>, id: i32, _precision: i64, out: i32) -> i32 {
    static START: OnceLock<Instant> = OnceLock::new();
    let nanos = match id {
        // realtime
        0 => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        // monotonic; process and thread CPU time are reported as monotonic time as well
        1..=3 => START.get_or_init(Instant::now).elapsed().as_nanos() as u64,
        _ => return EINVAL,
    };
    if put(&mut caller, out, &nanos.to_le_bytes()) {
        SUCCESS
    } else {
        EFAULT
    }
}

fn random_get(mut caller: Caller<'_, StoreData>, buf: i32, len: i32) -> i32 {
    let mut bytes = vec![0u8; len as u32 as usize];
    if getrandom::fill(&mut bytes).is_err() {
        return ENOTSUP;
    }
    if put(&mut caller, buf, &bytes) {
        SUCCESS
    } else {
        EFAULT
    }
}

/// The bytes of an iovec array (`{ptr: u32, len: u32}` pairs); `None` if any is out of bounds.
fn gather(caller: &mut Caller<'_, StoreData>, iovs: i32, count: i32) -> Option<Vec<u8>> {
    let memory = memory(caller)?;
    let data = memory.data(&*caller);
    let mut out = Vec::new();
    for i in 0..count as u32 as usize {
        let at = (iovs as u32 as usize).checked_add(i * 8)?;
        let entry = data.get(at..at + 8)?;
        let ptr = u32::from_le_bytes(entry[..4].try_into().ok()?) as usize;
        let len = u32::from_le_bytes(entry[4..].try_into().ok()?) as usize;
        out.extend_from_slice(data.get(ptr..ptr.checked_add(len)?)?);
    }
    Some(out)
}

fn fd_write(
    mut caller: Caller<'_, StoreData>,
    fd: i32,
    iovs: i32,
    count: i32,
    written: i32,
) -> i32 {
    if fd != 1 && fd != 2 {
        return EBADF;
    }
    let Some(bytes) = gather(&mut caller, iovs, count) else {
        return EFAULT;
    };
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim_end_matches('\n');
    let plugin = caller.data().host.plugin.as_str();
    if fd == 1 {
        tracing::info!(target: "mofa::wasm", plugin, stream = "stdout", "{text}");
    } else {
        tracing::warn!(target: "mofa::wasm", plugin, stream = "stderr", "{text}");
    }
    if put(&mut caller, written, &(bytes.len() as u32).to_le_bytes()) {
        SUCCESS
    } else {
        EFAULT
    }
}

/// Standard input is empty: every read is at its end.
fn fd_read(mut caller: Caller<'_, StoreData>, fd: i32, _iovs: i32, _count: i32, read: i32) -> i32 {
    if fd != 0 {
        return std_fd(fd, EBADF);
    }
    if put(&mut caller, read, &0u32.to_le_bytes()) {
        SUCCESS
    } else {
        EFAULT
    }
}

fn fd_fdstat_get(mut caller: Caller<'_, StoreData>, fd: i32, out: i32) -> i32 {
    const CHARACTER_DEVICE: u8 = 2;
    const RIGHT_FD_READ: u64 = 1 << 1;
    const RIGHT_FD_WRITE: u64 = 1 << 6;
    let rights = match fd {
        0 => RIGHT_FD_READ,
        1 | 2 => RIGHT_FD_WRITE,
        _ => return EBADF,
    };
    let mut stat = [0u8; 24];
    stat[0] = CHARACTER_DEVICE;
    stat[8..16].copy_from_slice(&rights.to_le_bytes());
    if put(&mut caller, out, &stat) {
        SUCCESS
    } else {
        EFAULT
    }
}
