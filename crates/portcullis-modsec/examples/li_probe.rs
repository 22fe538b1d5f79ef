use portcullis_modsec::libinjection as li;
fn main() {
    for arg in std::env::args().skip(1) {
        let (flags, input) = arg.split_once(':').unwrap();
        let flags: i32 = flags.parse().unwrap();
        let input = input.as_bytes();
        for t in li::sqli_tokenize(input, flags) {
            println!("tok {} pos={} len={} count={} open={:?} close={:?} val={:?}", t.kind as char, t.pos, t.len, t.count, t.str_open as char, t.str_close as char, String::from_utf8_lossy(&t.val));
        }
        for t in li::sqli_fold(input, flags) {
            println!("fold {} val={:?}", t.kind as char, String::from_utf8_lossy(&t.val));
        }
        println!("sqli={:?} xss={} h5={:?}", li::sqli(input), li::xss(input), li::h5_tokenize(input, 0));
    }
    println!("{:?}", li::sqli_lookup_word(b"union all"));
    println!("{:?}", li::sqli_lookup_word(b"0s&1"));
}
