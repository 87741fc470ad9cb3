//! The guard ABI (docs/guard-abi.md): buffers, return codes, host imports.

#[link(wasm_import_module = "env")]
extern "C" {
    fn call_backend(tool: *const u8, tool_len: u32, args: *const u8, args_len: u32, out: *mut u8, out_size: u32) -> i32;
    fn host_log(level: u32, msg: *const u8, len: u32);
}

/// Return code: the output buffer is too small (the needed size is in its first 4 bytes).
pub const BUFFER_TOO_SMALL: i32 = -2;
/// Return code: the guard failed (bad input, bad policy).
pub const FAILED: i32 = -1;

pub fn log(level: u32, msg: &str) {
    unsafe { host_log(level, msg.as_ptr(), msg.len() as u32) }
}

/// A `tools/call` to the guarded server; the MCP result JSON, or None on any failure.
pub fn backend(tool: &str, args: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    for _ in 0..2 {
        let n = unsafe {
            call_backend(tool.as_ptr(), tool.len() as u32, args.as_ptr(), args.len() as u32, buf.as_mut_ptr(), buf.len() as u32)
        };
        if n >= 0 {
            buf.truncate(n as usize);
            return Some(buf);
        }
        if n != BUFFER_TOO_SMALL {
            return None;
        }
        let need = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if need <= buf.len() || need > 8 << 20 {
            return None;
        }
        buf = vec![0u8; need];
    }
    None
}

/// Runs a label export: reads the input, writes the answer or asks for a bigger buffer.
pub fn run(input: *const u8, input_len: i32, out: *mut u8, out_size: i32, f: fn(&[u8]) -> Result<String, String>) -> i32 {
    if input.is_null() || input_len < 0 || out.is_null() || out_size < 0 {
        return FAILED;
    }
    let input = unsafe { core::slice::from_raw_parts(input, input_len as usize) };
    match f(input) {
        Ok(answer) => {
            let bytes = answer.as_bytes();
            if bytes.len() > out_size as usize {
                if out_size >= 4 {
                    let need = (bytes.len() as u32).to_le_bytes();
                    unsafe { core::ptr::copy_nonoverlapping(need.as_ptr(), out, 4) };
                }
                return BUFFER_TOO_SMALL;
            }
            unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), out, bytes.len()) };
            bytes.len() as i32
        }
        Err(why) => {
            log(3, &why);
            FAILED
        }
    }
}

#[no_mangle]
pub extern "C" fn alloc(size: i32) -> *mut u8 {
    if size <= 0 {
        return core::ptr::null_mut();
    }
    let layout = match std::alloc::Layout::from_size_align(size as usize, 8) {
        Ok(l) => l,
        Err(_) => return core::ptr::null_mut(),
    };
    unsafe { std::alloc::alloc(layout) }
}

#[no_mangle]
pub extern "C" fn dealloc(ptr: *mut u8, size: i32) {
    if ptr.is_null() || size <= 0 {
        return;
    }
    if let Ok(layout) = std::alloc::Layout::from_size_align(size as usize, 8) {
        unsafe { std::alloc::dealloc(ptr, layout) }
    }
}
