//! Any bytes as a request frame: decoding gives a request or an error, never a panic or a
//! hang.
#![no_main]

#[global_allocator]
static ALLOCATOR: sluice_broker::alloc::LazyHugeAllocator =
    sluice_broker::alloc::LazyHugeAllocator(std::alloc::System);

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = sluice_broker::connection::decode_request(bytes::Bytes::copy_from_slice(data));
});
