"""Face mode: find every face (BlazeFace on LiteRT), align it to the embedder's template, embed it.

``FacePipeline`` detects and embeds; ``FaceRecognizer`` adds a gallery and is the live
pipeline's face processor (``process(rgb_frame)``). Imports only numpy and OpenCV.
"""
from .align import AlignmentTemplate, align_face, default_template, template_for
from .detector import KEYPOINT_NAMES, Detections, Face, FaceDetector
from .recognizer import (FaceEmbedder, FacePipeline, FaceRecognizer, FaceResult, default_face_model, open_face_model,
                         threshold_at_far)

__all__ = ["AlignmentTemplate", "Detections", "Face", "FaceDetector", "FaceEmbedder", "FacePipeline", "FaceRecognizer",
           "FaceResult", "KEYPOINT_NAMES", "align_face", "default_face_model", "default_template", "open_face_model", "template_for",
           "threshold_at_far"]
