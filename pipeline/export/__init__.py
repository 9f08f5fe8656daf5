"""Export: the trained student as ONNX (fp32, int8 QDQ), TFLite (fp32, full-integer int8) and OpenVINO IR (fp32/fp16, int8).

``pipeline.formats`` is the table of formats every other module reads; each row names its converter. One module
per family converts (``onnx_family``, ``qdq``, ``tflite`` with its ``tflite_converter`` choice and
recalibration, ``openvino``), from ``common.ExportInputs`` to ``common.Artifact`` records, each calling a tool
wrapper named ``src2dst`` (``torch2onnx``, ``onnx2qdq``, ``onnx2tflite``, ``onnx2openvino``); ``walk`` calls the
rows' converters in table order for the ``stage`` and for the untrained check (``untrained``, run before training);
``verify`` holds every artifact to its ``fidelity`` rule. Toolchains are imported inside the functions, so importing
this package costs nothing.
"""
