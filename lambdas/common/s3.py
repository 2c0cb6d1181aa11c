"""Amazon S3 facts the functions and the kit hold requests to."""

import re

# A general purpose bucket's name: 3 to 63 lowercase letters, digits, dots and hyphens, beginning and ending with
# a letter or digit (https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html).
BUCKET_NAME_PATTERN = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
BUCKET_NAME = re.compile(BUCKET_NAME_PATTERN)  # use fullmatch

# "The object key name consists of a sequence of Unicode characters encoded in UTF-8, with a maximum length of 1,024
# bytes" (https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-keys.html): bytes, not characters. botocore
# checks neither: a longer key is S3's 400, and a name that is not UTF-8 fails in botocore's serializer.
S3_KEY_MAX_BYTES = 1024
