//! A shared library that is not a popcosmos plugin: no `popcosmos_plugin_entry` symbol.

#[unsafe(no_mangle)]
pub extern "C" fn some_other_function() -> i32 {
    42
}
