"""Kernel images for the docker backend, built on this machine from the environment catalog
(``recipe`` the I/O-free core, ``base`` the debootstrap base, ``build`` the images, ``cli`` ``bai image``)."""
