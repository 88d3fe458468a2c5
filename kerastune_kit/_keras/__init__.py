"""Access to Keras and TensorFlow beyond their public API: private attributes
(``private``), the chief-worker rule (``distribute``) and host reads of
scalars on any backend (``scalars``)."""
