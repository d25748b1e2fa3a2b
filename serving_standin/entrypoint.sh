#!/bin/sh
# Same contract as tensorflow/serving's tf_serving_entrypoint.sh: fixed ports and model from the
# environment first, then the container's arguments (a later copy of a flag wins).
exec tensorflow_model_server --port=8500 --rest_api_port=8501 \
  --model_name="${MODEL_NAME}" --model_base_path="${MODEL_BASE_PATH}/${MODEL_NAME}" "$@"
