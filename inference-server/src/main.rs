fn main() {
    println!("nlu-server: not yet implemented");
}
