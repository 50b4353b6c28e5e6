// placeholder: the management UI script replaces this file
