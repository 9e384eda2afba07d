"""DragGAN: the algorithm as plain tensor functions (core), the DragSession API (session), recording."""
