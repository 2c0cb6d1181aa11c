"""Amazon S3 facts the functions and the kit hold requests to."""

# "The object key name consists of a sequence of Unicode characters encoded in UTF-8, with a maximum length of 1,024
# bytes" (https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-keys.html): bytes, not characters. botocore
# checks neither: a longer key is S3's 400, and a name that is not UTF-8 fails in botocore's serializer.
S3_KEY_MAX_BYTES = 1024
