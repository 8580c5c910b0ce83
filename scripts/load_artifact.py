"""Load an artifact the way a production service does and embed a few sentences.

    python scripts/load_artifact.py dist/<artifact>            # the artifact's own loader (no torch)
    python scripts/load_artifact.py models:/NAME@ALIAS         # the registered MLflow pyfunc
"""

import importlib.util
import sys

import numpy as np

SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome.",
             "A cheetah is running behind its prey."]


def main(target: str) -> None:
    if target.startswith("models:/"):
        import mlflow

        embeddings = mlflow.pyfunc.load_model(target).predict(SENTENCES)
    else:
        sys.path.insert(0, target)
        from loader import load  # the loader package inside the artifact

        embeddings = load(target).encode(SENTENCES, batch_size=32)
    heavy = [m for m in ("torch", "transformers", "sentence_transformers") if importlib.util.find_spec(m)]
    print(f"{target}: embeddings {embeddings.shape} {embeddings.dtype}; torch-like packages installed: "
          f"{heavy or 'none'}")
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    print("cosine similarity:\n" + np.array2string(unit @ unit.T, precision=3))


if __name__ == "__main__":
    main(sys.argv[1])
