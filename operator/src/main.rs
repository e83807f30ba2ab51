fn main() {
    println!("nlu-operator: not yet implemented");
}
