"""Export: the trained student as ONNX (fp32, int8 QDQ), TFLite (fp32, full-integer int8) and OpenVINO IR (fp32/fp16, int8).

``formats`` is the table of formats every other module reads. One conversion per module, named
``src2dst`` (``torch2onnx``, ``onnx2qdq``, ``onnx2tflite``, ``onnx2openvino``); ``tflite_graph`` reads a .tflite's ops and quantisation and judges it
full-integer; ``sidecar`` writes the JSON beside every artifact; ``fidelity`` compares an
artifact's logits with PyTorch; ``stage`` runs them in order. Toolchains are imported
inside the functions, so importing this package costs nothing.
"""
