"""The TCMU handler: the ring and the SCSI device emulations."""
