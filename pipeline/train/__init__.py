"""The training loop shared by the teacher, distill and QAT stages."""
