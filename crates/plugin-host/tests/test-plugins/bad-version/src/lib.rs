//! A plugin built against a (hypothetical) future ABI version 2: the host must refuse it
//! after reading only the version field.

use popcosmos_plugin_abi::{KIND_PRIOR, PluginHeader};

struct Header(PluginHeader);
// SAFETY: immutable static; the pointers are to static C strings.
unsafe impl Sync for Header {}

static HEADER: Header = Header(PluginHeader {
    abi_version: 2,
    kind: KIND_PRIOR,
    plugin_name: c"bad-version".as_ptr(),
    plugin_version: c"0.1.0".as_ptr(),
});

#[unsafe(no_mangle)]
pub extern "C" fn popcosmos_plugin_entry() -> *const PluginHeader {
    &HEADER.0
}
