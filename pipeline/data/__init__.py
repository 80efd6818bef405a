"""Problems, prompts and preference pairs: reading data files and turning them into token ids."""
