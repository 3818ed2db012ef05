"""The five stages, written once for every data kind; each opens the engine it needs through
``Runtime``, reads, calls the kind where the data differs, writes, and returns a small dict
saying where its outputs went. Every Spark, Ray and MLflow call of the pipeline lives here, in
the Spark task kit (``sparkkit``) and in the Ray worker shell (``training.shell``)."""
