k = "a\"b\\c\n\t\u00e9\U0001F600\x41\101 ${x("y")}"
n = -0x1F
o = 017
f = 1.5e3
b = false
