//! Generated protocol types and the conversions between them and the framework's types.

#![allow(clippy::all, clippy::pedantic)]

pub mod tfplugin6 {
    tonic::include_proto!("tfplugin6");
}
pub mod plugin {
    tonic::include_proto!("plugin");
}
