//! Generates the tonic server and client of KEDA's External Scaler service
//! (`proto/externalscaler.proto`) without protoc: the messages are hand-written prost structs in
//! `src/keda/proto.rs`, and only the service code is generated here.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=proto/externalscaler.proto");
    let method = |name: &str, route: &str, input: &str, output: &str, stream: bool| {
        let b = tonic_build::manual::Method::builder()
            .name(name)
            .route_name(route)
            .input_type(input)
            .output_type(output)
            .codec_path("tonic_prost::ProstCodec");
        if stream {
            b.server_streaming().build()
        } else {
            b.build()
        }
    };
    let service = tonic_build::manual::Service::builder()
        .name("ExternalScaler")
        .package("externalscaler")
        .method(method(
            "is_active",
            "IsActive",
            "crate::keda::proto::ScaledObjectRef",
            "crate::keda::proto::IsActiveResponse",
            false,
        ))
        .method(method(
            "stream_is_active",
            "StreamIsActive",
            "crate::keda::proto::ScaledObjectRef",
            "crate::keda::proto::IsActiveResponse",
            true,
        ))
        .method(method(
            "get_metric_spec",
            "GetMetricSpec",
            "crate::keda::proto::ScaledObjectRef",
            "crate::keda::proto::GetMetricSpecResponse",
            false,
        ))
        .method(method(
            "get_metrics",
            "GetMetrics",
            "crate::keda::proto::GetMetricsRequest",
            "crate::keda::proto::GetMetricsResponse",
            false,
        ))
        .build();
    tonic_build::manual::Builder::new().compile(&[service]);
}
