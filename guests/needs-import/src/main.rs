//! Imports `example:missing/clock`, which no wasmproc host provides, so it
//! can never start: the host must say which import is missing.

wit_bindgen::generate!({
    inline: "
        package example:missing;
        interface clock {
            now: func() -> u64;
        }
        world needs {
            import clock;
        }
    ",
    world: "example:missing/needs",
});

fn main() {
    println!("{}", example::missing::clock::now());
}
