"""Beam stages, one subpackage per stage. Each stage's algorithm is a plain function over
numpy/Arrow (its kernel module); the stage module wraps it in a DoFn/PTransform.

    decode/    source files -> chunks (video, audio, text, sensor decoders)
    validate/  chunks checked against their contracts; timestamp plausibility
    clock/     device clocks onto the reference clock; DTW-sync estimates the models
    align/     time buckets, alignment policies, approximate-time sets, the join
    register/  cameras and sensors into one frame
    io/        Kafka reader and the Parquet sink
"""
