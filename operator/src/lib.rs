//! nlu-operator library: controllers and pure builders.
