"""X-ray image analysis for the SE -> DE task: tumour visibility (:mod:`pipeline.xray.visibility`)."""
