use comm::sim::{Sim, SimConfig};
use comm::Config;
fn rss() -> f64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    s.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() * 4096.0 / 1024.0
}
fn main() {
    let mut sim = Sim::new(SimConfig {
        signatures: &comm::signing::SIM_SIGNATURES,
        ..SimConfig::default()
    });
    let c = Config::default();
    let r0 = rss();
    for _ in 0..2000 {
        sim.add_node(c.clone());
    }
    let r1 = rss();
    println!("idle node: {:.1} KiB", (r1 - r0) / 2000.0);
    println!("size_of Node {}", std::mem::size_of::<comm::Node>());
}
