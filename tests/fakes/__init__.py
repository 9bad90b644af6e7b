"""Stand-ins for TensorRT and cuda-python, so the TensorRT code paths run on any machine.

They mimic the control flow and the call signatures the project uses; they
prove nothing about TensorRT itself. ``tests/test_trt_api.py`` checks them
against the real bindings (TensorRT 10.13 and 11.4, cuda-bindings 12.9 and
13.x): every class, method, parameter name and enum value a stand-in has must
exist in the real API.
"""
