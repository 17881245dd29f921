"""Model families, one module (or package) each.

Importing `kzoo` registers every model found here: `kzoo.registry` walks this
package, so a new family registers by existing.
"""
