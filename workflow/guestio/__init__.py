"""guestio: reusable logic behind the reproduction pipeline (kernels, images, VM runs, results)."""
