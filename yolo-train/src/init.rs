//! Weight initialisation: the seeded Glorot initialiser and the check that a checkpoint given as
//! initial weights fits the model variant ([`check_weights_fit`]); both live in `yolo_model` and
//! are re-exported here under their old paths.

pub use yolo_model::{check_weights_fit, seeded_glorot_init};
