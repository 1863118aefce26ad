"""The problems a fresh installation starts with."""

BUILT_IN_PROBLEMS = [
    {
        "slug": "hello", "title": "Hello, world",
        "statement": "Print exactly: Hello, world!",
        "test_input": "", "expected_output": "Hello, world!\n",
        "time_limit": 1.0, "memory_limit_mb": 256, "output_limit_kb": 64,
    },
    {
        "slug": "sum", "title": "Sum of numbers",
        "statement": "The input holds one integer per line. Print their sum.",
        "test_input": "".join(f"{n}\n" for n in range(1, 101)) + "-50\n",
        "expected_output": "5000\n",
        "time_limit": 1.0, "memory_limit_mb": 256, "output_limit_kb": 64,
    },
    {
        "slug": "reverse", "title": "Lines in reverse",
        "statement": "Print the lines of the input in reverse order.",
        "test_input": "first\nsecond\nthird\n", "expected_output": "third\nsecond\nfirst\n",
        "time_limit": 1.0, "memory_limit_mb": 256, "output_limit_kb": 64,
    },
]
